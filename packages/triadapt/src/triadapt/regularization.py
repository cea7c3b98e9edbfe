"""Orthogonal regulariser (paper Eq. 10, Table II).

``R = mean over the 2M factors of ‖P − I‖_F`` with ``P = A Aᵀ`` and ``P = Bᵀ B`` (both r×r,
active rank only). The paper writes AᵀA, which is n×n and cannot be the identity for
r < n; the r×r Gram matrices are meant (ALGORITHM.md §6). ``squared=True`` uses the
squared norm of the literal Eq. 10. The caller adds ``λ · R`` to its loss.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from triadapt.layer import AdapterLayer


def gram_deviation(gram: Tensor, squared: bool) -> Tensor:
    """‖P − I‖_F (or its square) for an r×r Gram matrix P."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    value = torch.sum((gram - eye) ** 2)
    return value if squared else torch.sqrt(value)


def orthogonal_penalty(layers: Iterable[AdapterLayer], squared: bool = False) -> Tensor:
    """Mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over all active adapters (unweighted by λ)."""
    terms = []
    for layer in layers:
        if layer.rank == 0 or layer.merged:
            continue
        factors = layer.take_cached_factors() or layer.factors()  # reuse this step's forward when possible
        terms.append(gram_deviation(factors.down @ factors.down.T, squared))  # (r, n) @ (n, r) -> (r, r)
        terms.append(gram_deviation(factors.up.T @ factors.up, squared))  # (r, d) @ (d, r) -> (r, r)
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()
