"""Assemble every adapter's factors once per model forward, in a few batched operations.

Per layer, a forward would slice its unit rows, split them and build the core (for
``triangular``: two ``tril``, a transpose, an add and D·A), each a dispatched operation with a
backward node: about twenty per matrix and step, which on a GPU at fine-tuning batch sizes is
launch overhead rather than arithmetic. `StepAssembly` does that work for all matrices of one
layout together when the model's forward starts (a forward pre-hook on the model ``inject``
wrapped): their unit parameters, cut to the largest rank of the group, are stacked, rows
beyond each matrix's own rank zeroed, and assembled by the structure's ``assemble_stack`` (for the
built-ins one autograd node, `triadapt.stacked_factors`; a plugin structure that sets
``batched_rows`` gets its ``assemble_rows`` run on the stack). Each layer then applies
``x → (D·A) x → Bᵀ rows`` like LoRA's two linears. Rows beyond a matrix's rank are zero in
D·A and in B, so the output is the same and their gradient stays exactly zero. The orthogonal
regulariser of the same step reuses the stacked A and Bᵀ (`stacked_blocks`).

A layer falls back to its own assembly when the structure does not batch, under DeepSpeed
ZeRO-3 (parameters gathered per module), when it is called outside a forward of that model, or
when its units or rank changed since the assembly. Inside a backward pass (non-reentrant
gradient checkpointing recomputes the forward there) a layer reuses the assembled factors only
if its forward used them with autograd on, so the recomputation saves the same tensors; under
reentrant checkpointing the original forward ran without autograd and the recomputation
assembles per layer.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from triadapt.reused_buffers import buffers_of
from triadapt.stacked_factors import unbind_stack
from triadapt.structures import Factors
from triadapt.unit_storage import group_by_layout


class _Entry:
    __slots__ = ("factors", "rank", "version", "with_grad")

    def __init__(self, factors: Factors, rank: int, version: int):
        self.factors, self.rank, self.version, self.with_grad = factors, rank, version, False


class _Stack:
    __slots__ = ("blocks", "ranks", "versions", "consumed")

    def __init__(self, blocks: tuple[torch.Tensor, torch.Tensor], ranks: tuple[int, ...], versions: tuple[int, ...]):
        self.blocks, self.ranks, self.versions, self.consumed = blocks, ranks, versions, False

    def consume(self, grad: torch.Tensor) -> None:
        self.consumed = True


class StepAssembly:
    """Per model forward, the batched factors of a controller's layers (see the module docstring)."""

    def __init__(self, layers: Iterable[Any]):
        self.layers = list(layers)
        self.active = False
        self._entries: dict[int, _Entry] = {}
        self._stacks: dict[tuple[int, ...], _Stack] = {}  # layer ids of a layout group -> its stacked A, Bᵀ
        self._handles: list[Any] = []

    def install(self, model: nn.Module) -> None:
        self._handles = [model.register_forward_pre_hook(self._begin),
                         model.register_forward_hook(self._end, always_call=True)]
        for layer in self.layers:
            layer.assembly = self

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for layer in self.layers:
            layer.assembly = None
        self._entries, self._stacks = {}, {}

    def factors(self, layer: Any) -> Factors | None:
        """The assembled factors for ``layer`` if they are valid here, else None (assemble per layer)."""
        entry = self._entries.get(id(layer))
        if entry is None or entry.rank != layer.rank or entry.version != layer.units._version:
            return None
        if self.active:
            entry.with_grad = entry.with_grad or torch.is_grad_enabled()
            return entry.factors
        if entry.with_grad and torch._C._current_graph_task_id() != -1:  # a checkpointed forward, recomputed
            return entry.factors
        return None

    def stacked_blocks(self, layers: list[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A and Bᵀ, each (G, top, ·) with rows beyond each rank zero, as this forward built them for exactly
        ``layers`` (the regulariser reuses them), while no backward has gone through them and nothing changed;
        else None."""
        stack = self._stacks.get(tuple(id(layer) for layer in layers))
        if (stack is None or stack.consumed or stack.ranks != tuple(layer.rank for layer in layers)
                or stack.versions != tuple(layer.units._version for layer in layers)
                or (torch.is_grad_enabled() and not stack.blocks[0].requires_grad)):  # built without autograd
            return None
        return stack.blocks

    def _begin(self, module: nn.Module, args: Any) -> None:
        self._entries, self._stacks = {}, {}
        batchable = [layer for layer in self.layers if layer.rank > 0 and not layer.merged
                     and getattr(layer.structure, "batched_rows", False) and not hasattr(layer.units, "ds_status")]
        for group in group_by_layout(batchable).values():
            ranks = tuple(layer.rank for layer in group)
            down, up_rows, a_rows = group[0].structure.assemble_stack([layer.units for layer in group], ranks,
                                                                      group[0].layout)
            stack_entry = _Stack((a_rows, up_rows), ranks, tuple(layer.units._version for layer in group))
            if up_rows.requires_grad:  # once a backward went through them (the layers' or the regulariser's) ...
                up_rows.register_hook(stack_entry.consume)  # ... their graph is gone
                a_rows.register_hook(stack_entry.consume)
            self._stacks[tuple(id(layer) for layer in group)] = stack_entry
            buffers = buffers_of(group[0].units)
            for layer, layer_down, layer_up in zip(group, unbind_stack(down, buffers, "∂ down"),
                                                   unbind_stack(up_rows, buffers, "∂ up")):
                self._entries[id(layer)] = _Entry(Factors(down=layer_down, up_rows=layer_up), layer.rank,
                                                  layer.units._version)
        self.active = True

    def _end(self, module: nn.Module, args: Any, output: Any) -> None:
        self.active = False
