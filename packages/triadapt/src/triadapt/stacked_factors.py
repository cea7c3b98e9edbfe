"""The built-in structures' factors from the unit parameters of G matrices, in one autograd node.

`triadapt.step_assembly` hands over the unit parameters of all matrices of one layout, each
``(capacity, width)``. Built with autograd, the factors would take a stack, a row slice, a
rank mask, a split with padding pieces, two ``tril``, a transpose, an add and a batched
matmul, and their backward would concatenate the split's gradients, zero-fill the padding
pieces and the rows beyond the slice, and walk a node per operation. `StackedFactors`
computes the same forward on the first ``top`` rows only and writes its gradient straight
into one ``(G, capacity, width)`` tensor, whose G slices become the parameters' gradients:

    R = stack(S_g[:top]) · M                 (rows beyond each matrix's rank zeroed)
    A = R[..., a],  Bᵀ = R[..., b]
    D = tril(R[..., l][:, :, :top]) + tril(R[..., u][:, :, :top])ᵀ      (triangular only)
    outputs: D·A (or A), Bᵀ, A              (A again for the orthogonal regulariser)

    backward:  ∂A = g_A·M + Dᵀ·g_DA,  ∂Bᵀ = g_B·M,
               ∂D = g_DA·Aᵀ,  ∂L = tril(∂D)·M,  ∂Uᵀ = tril(∂Dᵀ)·M,
               every other entry (rows from top on, the l and u padding columns) 0

(Dᵀ·g_DA needs no mask: D is zero beyond each rank). Checked against autograd with gradcheck.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from triadapt.reused_buffers import ReusedBuffers, buffers_of
from triadapt.unit_storage import rank_masks


def stacked_factors(units: Sequence[Tensor], ranks: tuple[int, ...], layout: Any,
                    core: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`Structure.assemble_stack` of the built-ins: rows ``a`` and ``b`` (and ``l``, ``u`` with ``core``)."""
    top = max(ranks)
    mask, _ = rank_masks(ranks, units[0].shape[0], units[0].dtype, units[0].device)
    blocks = ((layout.offsets["a"], layout.widths["a"]), (layout.offsets["b"], layout.widths["b"]),
              (layout.offsets["l"], layout.offsets["u"], layout.widths["l"]) if core else None)
    return StackedFactors.apply(mask.narrow(1, 0, top), top, blocks, buffers_of(units[0]), *units)


class StackedFactors(torch.autograd.Function):
    """``apply(mask, top, blocks, buffers, *units)`` → (down, up_rows, a_rows); ``blocks``: ((a_start, n),
    (b_start, d), (l_start, u_start, core width) or None for a structure without core); ``buffers``: a
    `ReusedBuffers` for the stacked rows, D·A and the gradient."""

    @staticmethod
    def forward(ctx, mask: Tensor, top: int, blocks: tuple, buffers: ReusedBuffers,
                *units: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (a_start, n), (b_start, d), core_starts = blocks
        count, width = len(units), units[0].shape[1]
        with torch.autocast(device_type=units[0].device.type, enabled=False):  # in the units' dtype, as the backward
            rows = buffers.get("rows", (count, top, width), units[0])
            torch.stack([unit.narrow(0, 0, top) for unit in units], out=rows)  # (G, top, width)
            rows.mul_(mask)
            a_rows = rows[..., a_start:a_start + n]
            up_rows = rows[..., b_start:b_start + d]
            core = None
            if core_starts is None:
                down = rows[..., a_start:a_start + n]  # a view of its own: the same values as a_rows
            else:
                l_start, u_start, _ = core_starts
                core = (torch.tril(rows[..., l_start:l_start + top])
                        + torch.tril(rows[..., u_start:u_start + top]).transpose(-2, -1))  # (G, top, top)
                down = torch.bmm(core, a_rows, out=buffers.get("down", (count, top, n), units[0]))  # D·A
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None (no zero tensor to build)
        ctx.save_for_backward(mask, rows[..., a_start:a_start + n], core)
        ctx.top, ctx.blocks, ctx.shape, ctx.buffers = top, blocks, (count, *units[0].shape), buffers
        return down, up_rows, a_rows

    @staticmethod
    def backward(ctx, g_down: Tensor | None, g_up: Tensor | None, g_a: Tensor | None):
        mask, a, core = ctx.saved_tensors
        (a_start, n), (b_start, d), core_starts = ctx.blocks
        top = ctx.top
        grad = ctx.buffers.get("grad", ctx.shape, a)
        grad[:, top:].zero_()
        g = grad[:, :top]
        grad_a, grad_b = g[..., a_start:a_start + n], g[..., b_start:b_start + d]
        if core is None:  # ∂A = (g_DA + g_A)·M
            masked = g_a if g_down is None else (g_down if g_a is None else g_down + g_a)
            unmasked = None
        else:  # ∂A = Dᵀ·g_DA + g_A·M; Dᵀ·g_DA is zero beyond each rank (so is D), computed contiguous (fast)
            masked = g_a
            unmasked = None if g_down is None else torch.bmm(core.transpose(-2, -1), g_down,
                                                             out=ctx.buffers.get("Dᵀ·g_DA", g_down.shape, g_down))
        if masked is None:
            grad_a.zero_() if unmasked is None else grad_a.copy_(unmasked)
        else:
            torch.mul(masked, mask, out=grad_a) if unmasked is None else torch.addcmul(unmasked, masked, mask,
                                                                                       out=grad_a)
        if core is not None:
            l_start, u_start, width = core_starts
            if g_down is not None:
                g_core = torch.bmm(g_down, a.transpose(-2, -1))  # (G, top, top)
                torch.mul(torch.tril(g_core), mask, out=g[..., l_start:l_start + top])
                torch.mul(torch.tril(g_core.transpose(-2, -1)), mask, out=g[..., u_start:u_start + top])
            else:
                g[..., l_start:l_start + top].zero_()
                g[..., u_start:u_start + top].zero_()
            g[..., l_start + top:l_start + width].zero_()  # padding columns of the l and u blocks
            g[..., u_start + top:u_start + width].zero_()
        if g_up is not None:
            torch.mul(g_up, mask, out=grad_b)
        else:
            grad_b.zero_()
        return None, None, None, None, *grad.unbind(0)


def unbind_stack(stack: Tensor, buffers: ReusedBuffers, name: str) -> tuple[Tensor, ...]:
    """``stack.unbind(0)`` (one factor per matrix) whose backward stacks the matrices' gradients into a reused
    buffer instead of a fresh tensor (`triadapt.reused_buffers`)."""
    if not (stack.requires_grad and torch.is_grad_enabled()):
        return stack.unbind(0)
    return UnbindStack.apply(buffers, name, stack)


class UnbindStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, buffers: ReusedBuffers, name: str, stack: Tensor) -> tuple[Tensor, ...]:
        ctx.buffers, ctx.name, ctx.shape = buffers, name, stack.shape
        ctx.set_materialize_grads(False)  # a matrix whose factor took no part in the loss: None
        return stack.unbind(0)

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        like = next((g for g in grads if g is not None), None)
        if like is None:
            return None, None, None
        out = ctx.buffers.get(ctx.name, ctx.shape, like)
        if all(g is not None for g in grads):
            torch.stack(grads, out=out)
        else:  # matrices whose factor took no part in the loss get zero
            for piece, g in zip(out.unbind(0), grads):
                piece.copy_(g) if g is not None else piece.zero_()
        return None, None, out
