"""Structures: how the update ΔW of one matrix is parametrised, unit of rank by unit of rank.

A structure cuts its factors into *rank units*: unit ``i`` holds every entry that appears
when the rank grows from ``i`` to ``i + 1``. For ``triangular`` (ΔW = B(L+U)A, paper Eq. 5)
unit ``i`` holds row ``i`` of A (``a``, length n), column ``i`` of B (``b``, length d), row
``i`` of L up to the diagonal (``l``, length i+1) and column ``i`` of U down to the diagonal
(``u``, length i+1): exactly the new entries of Eq. 6–9 (L_down + L_aug, U_up + U_aug).
Units are separate tensors so that an optimizer sees a grown unit as a freshly created
parameter (see DESIGN.md "Storage").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor


@dataclass
class Factors:
    """The assembled active factors of one matrix: ΔW = up @ core @ down (core may be absent)."""

    down: Tensor  # A: (r, n)
    up: Tensor  # B: (d, r)
    core: Tensor | None = None  # D = L + U: (r, r)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def apply(self, x: Tensor) -> Tensor:
        """B D A x computed right to left, never materialising ΔW."""
        h = x @ self.down.T  # (..., n) @ (n, r) -> (..., r)
        if self.core is not None:
            h = h @ self.core.T  # (..., r) @ (r, r) -> (..., r)
        return h @ self.up.T  # (..., r) @ (r, d) -> (..., d)

    def delta_weight(self) -> Tensor:
        """ΔW = B D A, shape (d, n) (unscaled)."""
        mid = self.up if self.core is None else self.up @ self.core  # (d, r)
        return mid @ self.down  # (d, r) @ (r, n) -> (d, n)

    def up_with_core(self) -> Tensor:
        """B' = B D (d, r): the LoRA 'B' that absorbs the core, for export."""
        return self.up if self.core is None else self.up @ self.core


class Structure(ABC):
    """Interface of a structure strategy. Subclasses are stateless and shared by all layers."""

    name: str = ""

    @abstractmethod
    def unit_shapes(self, index: int, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters of rank unit ``index`` (0-based)."""

    @abstractmethod
    def assemble(self, units: Sequence[Mapping[str, Tensor]]) -> Factors:
        """Factors of the active rank from the active units (``len(units)`` is the rank)."""

    def init_unit(self, index: int, params: Mapping[str, Tensor], *, initial: bool, std: float,
                  generator: torch.Generator | None) -> None:
        """Fill a unit in place: every entry N(0, σ²), except B = 0 for the initial units (Eq. 6-9)."""
        with torch.no_grad():
            for key, tensor in params.items():
                if key == "b" and initial:
                    tensor.zero_()
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * std)

    def importance_norm(self, factors: Factors) -> Tensor:
        """The norm scorers normalise: ‖D‖_F of the core, else ‖BA‖_F from r×r Gram matrices."""
        if factors.core is not None:
            return torch.linalg.matrix_norm(factors.core)
        gram_b = factors.up.T @ factors.up  # (r, d) @ (d, r) -> (r, r)
        gram_a = factors.down @ factors.down.T  # (r, n) @ (n, r) -> (r, r)
        return torch.sqrt(torch.clamp(torch.sum(gram_b * gram_a), min=0.0))  # tr(BᵀB AAᵀ) = ‖BA‖²_F


class TriangularStructure(Structure):
    """ΔW = B (L + U) A with L lower- and U upper-triangular, diagonal included in both.

    ``core_init="identity"`` adds ½ to the diagonal entry of L and of U of every unit, so the core
    starts as I + (the reference draw) and ΔW = B D A starts like LoRA's B A: the triple product
    no longer needs two small factors to grow before it can move. The importance norm is then
    that of the learned part, ‖D − I‖_F, so the identity itself never counts as importance.
    """

    name = "triangular"

    def __init__(self, core_init: str = "gaussian") -> None:
        if core_init not in ("gaussian", "identity"):
            raise ValueError(f"core_init={core_init!r} is invalid: must be 'gaussian' or 'identity'")
        self.core_init = core_init
        self._tril_cache: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def init_unit(self, index: int, params: Mapping[str, Tensor], *, initial: bool, std: float,
                  generator: torch.Generator | None) -> None:
        super().init_unit(index, params, initial=initial, std=std, generator=generator)
        if self.core_init == "identity":
            with torch.no_grad():  # entry ``index`` of l and of u is this unit's diagonal element
                params["l"][index] += 0.5
                params["u"][index] += 0.5

    def importance_norm(self, factors: Factors) -> Tensor:
        if self.core_init == "identity" and factors.core is not None:
            eye = torch.eye(factors.rank, dtype=factors.core.dtype, device=factors.core.device)
            return torch.linalg.matrix_norm(factors.core - eye)
        return super().importance_norm(factors)

    def unit_shapes(self, index: int, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        return {"a": (in_features,), "b": (out_features,), "l": (index + 1,), "u": (index + 1,)}

    def _tril(self, rank: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (rank, str(device))
        if key not in self._tril_cache:
            rows, cols = torch.tril_indices(rank, rank, device=device)  # row-major: (0,0),(1,0),(1,1),...
            self._tril_cache[key] = (rows, cols)
        return self._tril_cache[key]

    def assemble(self, units: Sequence[Mapping[str, Tensor]]) -> Factors:
        rank = len(units)
        down = torch.stack([u["a"] for u in units])  # (r, n)
        up = torch.stack([u["b"] for u in units], dim=1)  # (d, r)
        rows, cols = self._tril(rank, down.device)
        lower = torch.cat([u["l"] for u in units])  # (r(r+1)/2,) rows of L, row-major
        upper = torch.cat([u["u"] for u in units])  # (r(r+1)/2,) columns of U, column-major
        core = torch.zeros(rank, rank, dtype=down.dtype, device=down.device)
        core = core.index_put((rows, cols), lower, accumulate=True)  # + L
        core = core.index_put((cols, rows), upper, accumulate=True)  # + U
        return Factors(down=down, up=up, core=core)


class LoraStructure(Structure):
    """ΔW = B A, the LoRA baseline (paper Table I), grown by appending rows of A / columns of B."""

    name = "lora"

    def unit_shapes(self, index: int, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        return {"a": (in_features,), "b": (out_features,)}

    def assemble(self, units: Sequence[Mapping[str, Tensor]]) -> Factors:
        down = torch.stack([u["a"] for u in units])  # (r, n)
        up = torch.stack([u["b"] for u in units], dim=1)  # (d, r)
        return Factors(down=down, up=up)
