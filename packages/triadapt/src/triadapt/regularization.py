"""Orthogonal regulariser (paper Eq. 10, Table II).

``R = mean over the 2M factors of ‖P − I‖_F`` with ``P = A Aᵀ`` and ``P = Bᵀ B`` (both r×r,
active rank only). The paper writes AᵀA, which is n×n and cannot be the identity for
r < n; the r×r Gram matrices are meant (the only reading under which R can vanish). ``squared=True`` uses the
squared norm of the literal Eq. 10. The caller adds ``λ · R`` to its loss.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from triadapt.layer import AdapterLayer
from triadapt.reused_buffers import ReusedBuffers, buffers_of
from triadapt.unit_storage import rank_masks


def gram_deviation(gram: Tensor, squared: bool) -> Tensor:
    """‖P − I‖_F (or its square) for an r×r Gram matrix P."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    value = torch.sum((gram - eye) ** 2)
    return value if squared else torch.sqrt(value)


def orthogonal_penalty(layers: Iterable[AdapterLayer], squared: bool = False,
                       stacked: Callable[[list[AdapterLayer]], tuple[Tensor, Tensor] | None] | None = None) -> Tensor:
    """Mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over all active adapters (unweighted by λ).

    Matrices whose A and Bᵀ are column blocks of their unit rows (both built-in structures) are
    handled in batches of the same layout (`GroupPenalty`), on the stacked A and Bᵀ this forward's
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
        blocks = stacked([layer for layer, _ in group]) if stacked is not None else None
        if blocks is None:
            rows = torch.stack([units for _, units in group]) * mask  # (G, cap, width), rows >= rank zeroed
            blocks = tuple(rows.narrow(2, start, width) for start, width in columns)  # A, Bᵀ
        top = blocks[0].shape[1]
        value = GroupPenalty.apply(eye.narrow(1, 0, top).narrow(2, 0, top), squared, buffers_of(group[0][0].units),
                                   *blocks)
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
    """Σ over a stack of matrices and over their factors X (A and Bᵀ) of ‖X Xᵀ − I_r‖_F (or its square).

    Each block X is (G, rows, width) with rows beyond each matrix's rank zero, so ``X Xᵀ − eye``
    (``eye``: each matrix's partial identity) is the r×r deviation padded
    with zeros and has the same norm. The gradient is written by hand: with E = X Xᵀ − I
    (symmetric) and f = ‖E‖_F, ∂f/∂X = 2 E X / f and ∂f²/∂X = 4 E X; rows beyond the rank get
    zero because E is zero there. Checked against autograd (gradcheck).
    """

    @staticmethod
    def forward(ctx, eye: Tensor, squared: bool, buffers: ReusedBuffers, *blocks: Tensor) -> Tensor:
        deviations, norms = [], []
        with torch.autocast(device_type=blocks[0].device.type, enabled=False):  # in the units' dtype, as the backward
            for block in blocks:  # A (G, r, n), Bᵀ (G, r, d)
                deviation = torch.baddbmm(eye, block, block.transpose(1, 2), beta=-1)  # X Xᵀ − I_r, (G, r, r)
                deviations.append(deviation)
                norms.append(torch.linalg.vector_norm(deviation, dim=(1, 2)))  # (G,)
        ctx.save_for_backward(*blocks, *deviations, *norms)
        ctx.squared, ctx.buffers = squared, buffers
        values = torch.stack(norms)
        return torch.sum(values * values if squared else values)

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        count = len(saved) // 3
        blocks, deviations, norms = saved[:count], saved[count:2 * count], saved[2 * count:]
        grads = []
        for index, (block, deviation, norm) in enumerate(zip(blocks, deviations, norms)):
            if ctx.squared:
                scale = (4.0 * grad).reshape(1, 1, 1)
            else:  # at an exact optimum E = 0, so E X = 0 whatever the (finite) scale
                scale = (2.0 * grad / norm.clamp_min(torch.finfo(norm.dtype).tiny)).view(-1, 1, 1)
            out = ctx.buffers.get(f"penalty {index}", block.shape, block)
            grads.append(torch.bmm(deviation, block, out=out).mul_(scale))
        return None, None, None, *grads
