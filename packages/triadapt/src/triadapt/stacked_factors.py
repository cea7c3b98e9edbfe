"""The built-in structures' factors from stacked unit parameters, in one autograd node.

`triadapt.step_assembly` stacks the unit parameters of all matrices of one layout,
``(G, capacity, width)``. Built with autograd, the factors would take a row slice, a rank
mask, a split with padding pieces, two ``tril``, a transpose, an add and a batched matmul, and
their backward would concatenate the split's gradients, zero-fill the padding pieces and the
rows beyond the slice, and walk a node per operation. `StackedFactors` computes the same
forward and writes its gradient straight into one ``(G, capacity, width)`` tensor:

    R = S[:, :top] · M                       (rows beyond each matrix's rank zeroed)
    A = R[..., a],  Bᵀ = R[..., b]
    D = tril(R[..., l][:, :, :top]) + tril(R[..., u][:, :, :top])ᵀ      (triangular only)
    outputs: D·A (or A), Bᵀ, R              (R for the orthogonal regulariser)

    backward:  ∂A += Dᵀ·g_DA,  ∂D = g_DA·Aᵀ,  ∂L = tril(∂D),  ∂Uᵀ = tril(∂Dᵀ),
               ∂R[..., b] += g_B,  ∂R += g_R,  ∂S[:, :top] = ∂R · M,  ∂S[:, top:] = 0.

Checked against autograd with gradcheck.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from triadapt.unit_storage import rank_masks


def stacked_factors(stack: Tensor, ranks: tuple[int, ...], layout: Any, core: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`Structure.assemble_stack` of the built-ins: rows ``a`` and ``b`` (and ``l``, ``u`` with ``core``)."""
    top = max(ranks)
    mask, _ = rank_masks(ranks, stack.shape[1], stack.dtype, stack.device)
    blocks = ((layout.offsets["a"], layout.widths["a"]), (layout.offsets["b"], layout.widths["b"]),
              (layout.offsets["l"], layout.offsets["u"]) if core else None)
    return StackedFactors.apply(stack, mask.narrow(1, 0, top), top, blocks)


class StackedFactors(torch.autograd.Function):
    """``apply(stack, mask, top, blocks)`` → (down, up_rows, rows); ``blocks``: ((a_start, n), (b_start, d),
    (l_start, u_start) or None for a structure without core)."""

    @staticmethod
    def forward(ctx, stack: Tensor, mask: Tensor, top: int, blocks: tuple) -> tuple[Tensor, Tensor, Tensor]:
        (a_start, n), (b_start, d), core_starts = blocks
        with torch.autocast(device_type=stack.device.type, enabled=False):  # in the units' dtype, as the backward
            rows = stack[:, :top] * mask  # (G, top, width)
            down = rows[..., a_start:a_start + n]
            up_rows = rows[..., b_start:b_start + d]
            core = None
            if core_starts is not None:
                l_start, u_start = core_starts
                core = (torch.tril(rows[..., l_start:l_start + top])
                        + torch.tril(rows[..., u_start:u_start + top]).transpose(-2, -1))  # (G, top, top)
                down = torch.bmm(core, down)  # D·A (G, top, n)
        ctx.save_for_backward(mask, rows[..., a_start:a_start + n], core)
        ctx.top, ctx.blocks, ctx.shape = top, blocks, stack.shape
        return down, up_rows, rows

    @staticmethod
    def backward(ctx, g_down: Tensor | None, g_up: Tensor | None, g_rows: Tensor | None):
        mask, a, core = ctx.saved_tensors
        (a_start, n), (b_start, d), core_starts = ctx.blocks
        top = ctx.top
        grad = a.new_empty(ctx.shape)
        grad[:, top:].zero_()
        g = grad[:, :top]  # ∂R
        if g_rows is not None:
            g.copy_(g_rows)
        else:
            g.zero_()
        if g_up is not None:
            g[..., b_start:b_start + d].add_(g_up)
        if g_down is not None:
            if core is None:
                g[..., a_start:a_start + n].add_(g_down)
            else:
                l_start, u_start = core_starts
                g_core = torch.bmm(g_down, a.transpose(-2, -1))  # (G, top, top)
                g[..., a_start:a_start + n].baddbmm_(core.transpose(-2, -1), g_down)
                g[..., l_start:l_start + top].add_(torch.tril(g_core))
                g[..., u_start:u_start + top].add_(torch.tril(g_core.transpose(-2, -1)))
        g.mul_(mask)
        return grad, None, None, None
