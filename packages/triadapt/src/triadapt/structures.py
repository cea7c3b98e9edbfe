"""Structures: how the update ΔW of one matrix is parametrised, unit of rank by unit of rank.

A structure cuts its factors into *rank units*: unit ``i`` holds every entry that appears
when the rank grows from ``i`` to ``i + 1``. For ``triangular`` (ΔW = B(L+U)A, paper Eq. 5)
unit ``i`` holds row ``i`` of A (``a``, length n), column ``i`` of B (``b``, length d), row
``i`` of L up to the diagonal (``l``, length i+1) and column ``i`` of U down to the diagonal
(``u``, length i+1): exactly the new entries of Eq. 6–9 (L_down + L_aug, U_up + U_aug).
A matrix stores its units as the rows of one parameter (`triadapt.unit_storage`); a
structure either assembles the factors from those rows directly (``assemble_rows``, as both
built-ins do: a few slices per matrix) or from per-unit views (``assemble``, the generic path
a plugin structure gets for free).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from triadapt.stacked_factors import stacked_factors
from triadapt.unit_storage import UnitLayout, group_by_layout, rank_masks


class Factors:
    """The assembled active factors of one matrix: ΔW = up @ core @ down (core may be absent).

    ``down`` is A (r, n), ``up`` is B (d, r), ``core`` is D = L + U (r, r). A structure that holds
    Bᵀ as rows may pass ``up_rows`` (r, d) instead of ``up``; ``up`` is then its transpose.
    """

    def __init__(self, down: Tensor, up: Tensor | None = None, core: Tensor | None = None, *,
                 up_rows: Tensor | None = None):
        if (up is None) == (up_rows is None):
            raise ValueError("Factors needs exactly one of up (d, r) and up_rows (r, d)")
        self.down, self.core, self._up, self._up_rows = down, core, up, up_rows

    @property
    def up(self) -> Tensor:
        return self._up if self._up is not None else self._up_rows.t()

    @property
    def up_rows(self) -> Tensor:
        """Bᵀ (r, d) (with a leading batch dimension for factors assembled from stacked rows)."""
        return self._up_rows if self._up_rows is not None else self._up.transpose(-2, -1)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def cast(self, dtype: torch.dtype) -> "Factors":
        """The same factors in ``dtype`` (differentiable: gradients reach the original tensors)."""
        core = None if self.core is None else self.core.to(dtype)
        if self._up_rows is not None:
            return Factors(self.down.to(dtype), core=core, up_rows=self._up_rows.to(dtype))
        return Factors(self.down.to(dtype), self._up.to(dtype), core)

    def apply(self, x: Tensor) -> Tensor:
        """B D A x computed as B ((D A) x), never materialising ΔW."""
        down = self.down if self.core is None else self.core @ self.down  # (r, r) @ (r, n) -> (r, n)
        h = torch.nn.functional.linear(x, down)  # (..., n) @ (n, r) -> (..., r)
        if self._up_rows is not None:
            return torch.matmul(h, self._up_rows)  # (..., r) @ (r, d) -> (..., d)
        return torch.nn.functional.linear(h, self._up)

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
    batched_rows: bool = False  # True: assemble_rows also takes stacked rows (G, r, width), see assemble_stack

    @abstractmethod
    def unit_shapes(self, index: int, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters of rank unit ``index`` (0-based)."""

    @abstractmethod
    def assemble(self, units: Sequence[Mapping[str, Tensor]]) -> Factors:
        """Factors of the active rank from the active units (``len(units)`` is the rank)."""

    def assemble_rows(self, rows: Tensor, layout: "UnitLayout") -> Factors:
        """Factors from the active unit rows ``(rank, width)``; override to skip per-unit views."""
        return self.assemble([layout.unit_views(rows[index], index) for index in range(rows.shape[0])])

    def assemble_stack(self, units: Sequence[Tensor], ranks: tuple[int, ...],
                       layout: "UnitLayout") -> tuple[Tensor, Tensor, Tensor]:
        """Factors of G matrices at once (`triadapt.step_assembly`, only if ``batched_rows``) from their unit
        parameters (G tensors ``(capacity, width)``) at ``ranks``, top = max(ranks), each ``(G, top, ·)`` with
        rows beyond each matrix's rank zero: the down factor with the core folded in (D·A, or A), Bᵀ, and A
        (the orthogonal regulariser reuses Bᵀ and A)."""
        top = max(ranks)
        mask, _ = rank_masks(ranks, units[0].shape[0], units[0].dtype, units[0].device)
        rows = torch.stack([unit.narrow(0, 0, top) for unit in units]) * mask.narrow(1, 0, top)
        factors = self.assemble_rows(rows, layout)
        down = factors.down if factors.core is None else torch.matmul(factors.core, factors.down)
        return down, factors.up_rows, factors.down

    def init_unit(self, index: int, params: Mapping[str, Tensor], *, initial: bool, std: float,
                  generator: torch.Generator | None) -> None:
        """Fill a unit in place: every entry N(0, σ²), except B = 0 for the initial units (Eq. 6-9)."""
        with torch.no_grad():
            for key, tensor in params.items():
                if key == "b" and initial:
                    tensor.zero_()
                else:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * std)

    def importance_norms(self, layers: Sequence[Any]) -> list[float]:
        """``importance_norm`` of each layer's current factors (layers of rank ≥ 1); override to batch."""
        return [float(self.importance_norm(layer.factors())) for layer in layers]

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
    batched_rows = True

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

    def importance_norms(self, layers: Sequence[Any]) -> list[float]:
        """All cores at once, per layout: stacked at full capacity, entries beyond each rank masked to zero."""
        norms: dict[int, float] = {}
        for (shape, offsets, dtype, device), group in group_by_layout(layers).items():
            cap, starts = group[0].layout.widths["l"], dict(offsets)
            mask, eye = rank_masks(tuple(layer.rank for layer in group), shape[0], dtype, device)
            units = torch.stack([layer.units for layer in group]) * mask  # rows >= rank zeroed
            lower, upper_t = units.narrow(2, starts["l"], cap), units.narrow(2, starts["u"], cap)  # (G, cap, cap)
            core = torch.tril(lower) + torch.tril(upper_t).transpose(1, 2)  # zero beyond the rank: tril keeps j <= i
            if self.core_init == "identity":
                core = core - eye  # the learned part, D − I_r
            for layer, norm in zip(group, torch.linalg.matrix_norm(core).tolist()):
                norms[id(layer)] = norm
        return [norms[id(layer)] for layer in layers]

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

    def assemble_stack(self, units: Sequence[Tensor], ranks: tuple[int, ...],
                       layout: UnitLayout) -> tuple[Tensor, Tensor, Tensor]:
        return stacked_factors(units, ranks, layout, core=True)

    def assemble_rows(self, rows: Tensor, layout: UnitLayout) -> Factors:
        rank, cap = rows.shape[-2], layout.widths["l"]
        # one split: A (r, n), Bᵀ (r, d), then the first r columns of the l and u parts (the rest is padding)
        down, up_rows, lower, _, upper_t, _ = rows.split(
            [layout.widths["a"], layout.widths["b"], rank, cap - rank, rank, cap - rank], dim=-1)
        core = torch.tril(lower) + torch.tril(upper_t).transpose(-2, -1)  # L + U (row i of upper_t = column i of U)
        return Factors(down=down, core=core, up_rows=up_rows)


class LoraStructure(Structure):
    """ΔW = B A, the LoRA baseline (paper Table I), grown by appending rows of A / columns of B."""

    name = "lora"
    batched_rows = True

    def unit_shapes(self, index: int, in_features: int, out_features: int) -> dict[str, tuple[int, ...]]:
        return {"a": (in_features,), "b": (out_features,)}

    def assemble(self, units: Sequence[Mapping[str, Tensor]]) -> Factors:
        down = torch.stack([u["a"] for u in units])  # (r, n)
        up = torch.stack([u["b"] for u in units], dim=1)  # (d, r)
        return Factors(down=down, up=up)

    def assemble_stack(self, units: Sequence[Tensor], ranks: tuple[int, ...],
                       layout: UnitLayout) -> tuple[Tensor, Tensor, Tensor]:
        return stacked_factors(units, ranks, layout, core=False)

    def assemble_rows(self, rows: Tensor, layout: UnitLayout) -> Factors:
        down, up_rows = rows.split([layout.widths["a"], layout.widths["b"]], dim=-1)
        return Factors(down=down, up_rows=up_rows)

    def importance_norms(self, layers: Sequence[Any]) -> list[float]:
        """‖BA‖_F of all layers at once, per layout: tr(BᵀB AAᵀ) from masked full-capacity Gram matrices."""
        norms: dict[int, float] = {}
        for (shape, offsets, dtype, device), group in group_by_layout(layers).items():
            starts = dict(offsets)
            mask, _ = rank_masks(tuple(layer.rank for layer in group), shape[0], dtype, device)
            units = torch.stack([layer.units for layer in group]) * mask  # (G, cap, width), rows >= rank zeroed
            down = units.narrow(2, starts["a"], group[0].in_features)  # (G, cap, n)
            up_rows = units.narrow(2, starts["b"], group[0].out_features)  # (G, cap, d)
            gram_a, gram_b = down @ down.transpose(1, 2), up_rows @ up_rows.transpose(1, 2)  # (G, cap, cap)
            values = torch.sqrt(torch.clamp(torch.sum(gram_a * gram_b, dim=(1, 2)), min=0.0)).tolist()
            for layer, norm in zip(group, values):
                norms[id(layer)] = norm
        return [norms[id(layer)] for layer in layers]
