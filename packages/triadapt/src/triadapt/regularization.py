"""Orthogonal regulariser (paper Eq. 10, Table II).

``R = mean over the 2M factors of ‖P − I‖_F`` with ``P = A Aᵀ`` and ``P = Bᵀ B`` (both r×r,
active rank only). The paper writes AᵀA, which is n×n and cannot be the identity for
r < n; the r×r Gram matrices are meant (ALGORITHM.md §6). ``squared=True`` uses the
squared norm of the literal Eq. 10. The caller adds ``λ · R`` to its loss.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from triadapt.layer import AdapterLayer
from triadapt.unit_storage import rank_masks


def gram_deviation(gram: Tensor, squared: bool) -> Tensor:
    """‖P − I‖_F (or its square) for an r×r Gram matrix P."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    value = torch.sum((gram - eye) ** 2)
    return value if squared else torch.sqrt(value)


def orthogonal_penalty(layers: Iterable[AdapterLayer], squared: bool = False,
                       stacked: Callable[[list[AdapterLayer]], Tensor | None] | None = None) -> Tensor:
    """Mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over all active adapters (unweighted by λ).

    Matrices whose A and Bᵀ are column blocks of their unit rows (both built-in structures) are
    handled in batches of the same layout (`GroupPenalty`), on the stacked rows this forward's
    `triadapt.step_assembly` built when ``stacked`` returns them, else on a stack of their own;
    other structures go one by one.
    """
    groups: dict[tuple, list[tuple[AdapterLayer, Tensor]]] = {}
    terms, total, count = [], None, 0
    for layer in layers:
        if layer.rank == 0 or layer.merged:
            continue
        columns = layer.gram_columns()
        if columns is None:
            factors = layer.take_cached_factors() or layer.factors()  # reuse this step's forward when possible
            terms.append(gram_deviation(factors.down @ factors.down.T, squared).reshape(1))  # (r, r)
            terms.append(gram_deviation(factors.up.T @ factors.up, squared).reshape(1))  # (r, r)
            continue
        units = layer.penalty_units()
        groups.setdefault((tuple(units.shape), columns, units.dtype, units.device), []).append((layer, units))
    for (shape, columns, dtype, device), group in groups.items():
        mask, eye = rank_masks(tuple(layer.rank for layer, _ in group), shape[0], dtype, device)
        rows = stacked([layer for layer, _ in group]) if stacked is not None else None
        if rows is None:
            rows = torch.stack([units for _, units in group]) * mask  # (G, cap, width), rows >= rank zeroed
        top = rows.shape[1]
        value = GroupPenalty.apply(eye.narrow(1, 0, top).narrow(2, 0, top), columns, squared, rows)
        total = value if total is None else total + value
        count += len(columns) * len(group)
    if terms:
        extra = torch.cat(terms)
        total = extra.sum() if total is None else total + extra.sum()
        count += extra.numel()
    if total is None:
        return torch.zeros(())
    return total / count


class GroupPenalty(torch.autograd.Function):
    """Σ over a stack of matrices and over their A and Bᵀ blocks of ‖X Xᵀ − I_r‖_F (or its square).

    ``rows`` are the unit rows of the stack, (G, rows, width), with rows beyond each matrix's rank
    zero, so ``X Xᵀ − eye`` (``eye``: each matrix's partial identity) is the r×r deviation padded
    with zeros and has the same norm. The gradient is written by hand: with E = X Xᵀ − I
    (symmetric) and f = ‖E‖_F, ∂f/∂X = 2 E X / f and ∂f²/∂X = 4 E X; rows beyond the rank get
    zero because E is zero there. Checked against autograd (gradcheck).
    """

    @staticmethod
    def forward(ctx, eye: Tensor, columns: tuple, squared: bool, rows: Tensor) -> Tensor:
        blocks, deviations, norms = [], [], []
        with torch.autocast(device_type=rows.device.type, enabled=False):  # in the units' dtype, as the backward
            for start, width in columns:  # A (G, r, n), then Bᵀ (G, r, d)
                block = rows.narrow(2, start, width)
                deviation = torch.baddbmm(eye, block, block.transpose(1, 2), beta=-1)  # X Xᵀ − I_r, (G, r, r)
                blocks.append(block)
                deviations.append(deviation)
                norms.append(torch.linalg.vector_norm(deviation, dim=(1, 2)))  # (G,)
        ctx.save_for_backward(*blocks, *deviations, *norms)
        ctx.columns, ctx.squared, ctx.shape = columns, squared, rows.shape
        values = torch.cat(norms)
        return torch.sum(values * values if squared else values)

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved, blocks_count = ctx.saved_tensors, len(ctx.columns)
        blocks, deviations = saved[:blocks_count], saved[blocks_count:2 * blocks_count]
        norms = saved[2 * blocks_count:]
        out = blocks[0].new_zeros(ctx.shape)  # (G, r, width)
        for (start, width), block, deviation, norm in zip(ctx.columns, blocks, deviations, norms):
            if ctx.squared:
                scale = (4.0 * grad).reshape(1, 1, 1)
            else:  # at an exact optimum E = 0, so E X = 0 whatever the (finite) scale
                scale = (2.0 * grad / norm.clamp_min(torch.finfo(norm.dtype).tiny)).view(-1, 1, 1)
            torch.mul(torch.bmm(deviation, block), scale, out=out.narrow(2, start, width))
        return None, None, None, out
