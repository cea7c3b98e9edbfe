"""Scratch tensors kept from one training step to the next, reused only while nothing else holds them.

The batched assembly (`triadapt.stacked_factors`) works on a few large tensors per step: the
stacked unit rows, D·A, and the gradient of all unit parameters of a layout. Allocated afresh
each step, on a CPU they come from the C library's allocator, which hands large blocks back to
the system when they are freed; touching them again costs a page fault per 4 KiB, which at
small batch sizes makes up most of their cost. peft LoRA's tensors per matrix are small
enough to stay in the allocator's pools. `ReusedBuffers` keeps one tensor per name and
returns it again while its storage has no other user (the previous step's autograd graph
freed, ``zero_grad(set_to_none=True)`` released the gradients); otherwise — gradients kept
for accumulation, a graph retained, or a torch without the storage use count — it allocates
a fresh one and keeps that. Reuse therefore never overwrites anything still in use.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # references to a storage (private in torch)


def _references(tensor: Tensor) -> int:
    return _use_count(tensor.untyped_storage()._cdata)


_FREE = _references(torch.empty(1)) if _use_count is not None else None  # one tensor, one temporary storage object


class ReusedBuffers:
    """Named scratch tensors (see the module docstring)."""

    def __init__(self) -> None:
        self._held: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device that nothing else uses.

        It is a new tensor object over the kept storage (``detach``), so that whoever holds it, or a view of
        it, counts as a user of the storage."""
        held = self._held.get(name)
        if (held is not None and _FREE is not None and held.shape == shape and held.dtype == like.dtype
                and held.device == like.device and _references(held) == _FREE):
            return held.detach()
        fresh = like.new_empty(shape)
        self._held[name] = fresh
        return fresh.detach()


_BY_OWNER: dict[int, ReusedBuffers] = {}  # per id of a tensor that owns them, dropped when it dies


def buffers_of(owner: Tensor) -> ReusedBuffers:
    """The `ReusedBuffers` kept for ``owner`` (the first unit parameter of a stack) for as long as it lives."""
    buffers = _BY_OWNER.get(id(owner))
    if buffers is None:
        buffers = _BY_OWNER[id(owner)] = ReusedBuffers()
        weakref.finalize(owner, _BY_OWNER.pop, id(owner), None)
    return buffers
