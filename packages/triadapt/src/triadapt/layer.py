"""`AdapterLayer`: wraps one `nn.Linear` (or GPT-2 `Conv1D`) with a growable adapter.

Forward (paper Eq. 5): ``h = W0 x + α / (r + ε) · B (L + U) A · dropout(x)`` with r the
*current* rank. Every rank unit up to the reserved capacity exists from construction on, as
a row of one parameter per matrix; growth only raises the integer ``rank``, and rows beyond
it take no part in the forward, so their gradient is zero.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator

import torch
from torch import Tensor, nn

import triadapt.quantized as quantized
from triadapt.legacy_units import LegacyUnit
from triadapt.structures import Factors, Structure
from triadapt.unit_storage import UnitLayout

UNITS_ATTR = "triadapt_units"
RESERVE_ATTR = "triadapt_reserve"


def base_shape(base: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an adaptable layer."""
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features
    if is_conv1d(base):
        # GPT-2 Conv1D stores W as (in, out); a weight partitioned by DeepSpeed ZeRO-3 keeps its shape in ds_shape
        n_in, n_out = getattr(base.weight, "ds_shape", base.weight.shape)
        return n_in, n_out
    raise TypeError(f"cannot adapt {type(base).__name__}: only nn.Linear and transformers' Conv1D are supported")


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's `Conv1D` (a transposed linear layer), recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def is_adaptable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


class AdapterLayer(nn.Module):
    """A frozen base layer plus a TriAdaptLoRA adapter of growable rank.

    The rank units live in one parameter, ``triadapt_units`` of shape ``(capacity, width)``,
    one row per unit (`triadapt.unit_storage`). Rows at or beyond the rank take no part in the
    forward, so their gradient is zero; ``triadapt_reserve`` (a buffer of the same shape, not
    saved) keeps their initial values, which `triadapt.fresh_units` puts back when they join
    (an optimizer's weight decay or momentum may have moved them while they waited).
    """

    def __init__(self, base_layer: nn.Module, structure: Structure, *, init_rank: int, capacity: int,
                 lora_alpha: float, dropout: float, init_std: float, eps: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.base_layer = base_layer
        self.structure = structure
        self.in_features, self.out_features = base_shape(base_layer)
        self.lora_alpha, self.eps, self.capacity = float(lora_alpha), float(eps), int(capacity)
        self.init_rank = self.rank = int(init_rank)
        self.merged = False
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.layout = UnitLayout.build(structure, self.capacity, self.in_features, self.out_features)
        units = torch.zeros(self.capacity, self.layout.width)
        for index in range(self.capacity):
            structure.init_unit(index, self.layout.unit_views(units[index], index), initial=index < init_rank,
                                std=init_std, generator=generator)
        self.register_parameter(UNITS_ATTR, nn.Parameter(units))
        reserve = units.clone()
        reserve[: self.init_rank] = 0.0  # rows that start active have nothing to return to
        self.register_buffer(RESERVE_ATTR, reserve, persistent=False)
        self._factor_rows = all(unit.get("a") == (self.in_features,) and unit.get("b") == (self.out_features,)
                                for unit in self.layout.shapes)
        self.births = [0] * self.capacity  # optimizer step after which each unit joined (0: from the start)
        self._cached_factors: tuple[Factors, int] | None = None  # last training forward's factors
        self._live_units: Tensor | None = None  # under ZeRO-3: a view of the units taken in the training forward
        self.assembly: Any = None  # the controller's StepAssembly (factors assembled once per model forward)

    # -- rank -------------------------------------------------------------------------------------
    @property
    def units(self) -> nn.Parameter:
        """All reserved rank units, one per row: ``(capacity, layout.width)``."""
        return self._parameters[UNITS_ATTR]  # what nn.Module's attribute lookup returns, without its fallback

    @property
    def reserve_full(self) -> Tensor:
        """Initial values of the units, zero on rows below ``init_rank``: what a reserved unit holds until it joins."""
        return getattr(self, RESERVE_ATTR)

    @property
    def scale(self) -> float:
        return self.lora_alpha / (self.rank + self.eps)

    def set_rank(self, rank: int) -> None:
        if not 0 <= rank <= self.capacity:
            raise ValueError(f"rank={rank} is invalid: must be in [0, {self.capacity}] (the reserved capacity)")
        if self.merged:
            raise RuntimeError("cannot change the rank of a merged adapter: unmerge() first")
        self.rank = int(rank)
        self.births[self.rank:] = [0] * (self.capacity - self.rank)  # rows above the rank are reserved again
        self._cached_factors = None

    def grow(self, amount: int, step: int) -> None:
        """Activate the next ``amount`` units after optimizer step ``step`` (they start fresh from there)."""
        old = self.rank
        self.set_rank(old + amount)
        self.births[old:old + amount] = [int(step)] * amount

    def unit(self, index: int, rows: Tensor | None = None) -> dict[str, Tensor]:
        """The tensors of unit ``index``: views of its row of ``rows`` (default the units themselves;
        pass ``units.grad`` or an optimizer state tensor to see that unit's part of it)."""
        return self.layout.unit_views((self.units if rows is None else rows)[index], index)

    def active_unit_tensors(self, rows: Tensor | None = None) -> Iterator[dict[str, Tensor]]:
        """The tensors of each active unit (index < rank) as `unit` gives them: views of its row of ``rows``
        (default the units themselves)."""
        return (self.unit(index, rows) for index in range(self.rank))

    def active_units(self) -> Iterator[LegacyUnit]:
        """Deprecated since 0.2 (goes in 0.3): use `active_unit_tensors`.

        In 0.1 this yielded one module per active unit; code written for that keeps working: each unit
        yielded is a mapping of its tensors (as `active_unit_tensors` gives them) that also answers
        ``parameters()``, ``named_parameters()``, ``tensors()`` and ``unit.<name>``; its tensors are leaves on
        the unit's storage, as 0.1's parameters were, and carry their part of ``units.grad`` as ``.grad``
        (`triadapt.legacy_units`).
        """
        warnings.warn("AdapterLayer.active_units() is deprecated since 0.2 and goes in 0.3: use "
                      "active_unit_tensors() (each active unit's tensors by name, views of its row of `units`; "
                      "gradients: active_unit_tensors(units.grad))", DeprecationWarning, stacklevel=2)
        units, grad = self.units, self.units.grad
        return (LegacyUnit(self.unit(index), None if grad is None else self.unit(index, grad), units.requires_grad)
                for index in range(self.rank))

    def unit_numel(self, rank: int | None = None) -> int:
        """Entries of the first ``rank`` units (default: the current rank), padding excluded."""
        return sum(self.layout.numel(index) for index in range(self.rank if rank is None else rank))

    def penalty_units(self) -> Tensor:
        """The unit rows for the regulariser: the parameter, or under ZeRO-3 (which releases it after the
        forward) the view the last training forward kept (consumed once)."""
        live = self._live_units
        if live is None:
            return self.units
        self._live_units = None
        return live

    def gram_columns(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(start, width) of A and of Bᵀ inside the unit rows, if the structure stores them so (unit tensors
        ``a`` of shape (n,) and ``b`` of shape (d,)); else None. The regulariser batches on it."""
        if not self._factor_rows:
            return None
        return (self.layout.offsets["a"], self.in_features), (self.layout.offsets["b"], self.out_features)

    def factors(self) -> Factors:
        """The active factors (differentiable views of the unit rows)."""
        if self.rank == 0:
            raise RuntimeError("an adapter of rank 0 has no factors")
        return self.structure.assemble_rows(self.units.narrow(0, 0, self.rank), self.layout)

    def take_cached_factors(self) -> Factors | None:
        """Factors assembled by the last training forward if no active parameter changed since (consumed once)."""
        cached, self._cached_factors = self._cached_factors, None
        if cached is None or cached[0].rank != self.rank or cached[1] != self.units._version:
            return None
        return cached[0]

    def _apply(self, fn, recurse=True):  # .to() / .half() may replace parameter tensors: drop the cache
        self._cached_factors = self._live_units = None
        return super()._apply(fn, recurse)

    def delta_weight(self) -> Tensor:
        """The scaled update α/(r+ε)·ΔW in the (out, in) layout of nn.Linear, float32."""
        return self.factors().delta_weight() * self.scale

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.merged or self.rank == 0:
            return result
        factors = self.assembly.factors(self) if self.assembly is not None else None
        factors = factors if factors is not None else self.factors()
        if self.training and torch.is_grad_enabled():
            if not self._factor_rows:  # the regulariser of this step reuses them (built-ins batch instead)
                self._cached_factors = (factors, self.units._version)
            if hasattr(self.units, "ds_status"):  # ZeRO-3 empties the parameter after the forward: keep a live view
                self._live_units = self.units.view_as(self.units)
        dtype = quantized.compute_dtype(self.base_layer, x) or factors.down.dtype
        if factors.down.dtype != dtype:  # a quantised base's compute dtype (its bf16, say): the adapter follows it
            factors = factors.cast(dtype)
        if x.dtype != dtype:
            x = x.to(dtype)  # adapter math in the adapter dtype (fp32), or the quantised base's compute dtype
        delta = factors.apply(self.dropout(x))  # (..., d), unscaled
        if delta.dtype != result.dtype:
            return result + (delta * self.scale).to(result.dtype)
        return torch.add(result, delta, alpha=self.scale)

    # -- merge ------------------------------------------------------------------------------------
    def merge(self) -> None:
        """Add the scaled ΔW into the base weight; the forward then skips the adapter.

        A quantised base is dequantised, ΔW added and the sum quantised again (`triadapt.quantized`: lossy,
        within a stated bound); a base quantised in a way that cannot be redone raises `QuantizationError`
        before anything changes.
        """
        if self.merged:
            return
        quantized.check_mergeable(self.base_layer)
        with torch.no_grad():
            self._add_to_base(self.delta_weight(), sign=1.0)
        self.merged = True

    def unmerge(self) -> None:
        """Subtract the scaled ΔW again (for a quantised base: a second quantisation, not the weight before)."""
        if not self.merged:
            return
        with torch.no_grad():
            self._add_to_base(self.delta_weight(), sign=-1.0)
        self.merged = False

    @torch.no_grad()
    def _add_to_base(self, delta: Tensor, sign: float) -> None:
        if quantized.kind(self.base_layer) is not None:
            matrix = quantized.dequantize(self.base_layer)  # (out, in) float32
            quantized.requantize(self.base_layer, matrix.add_(delta.to(matrix.device), alpha=sign))
            return
        weight = self.base_layer.weight
        delta = delta.T if is_conv1d(self.base_layer) else delta  # Conv1D weight is (in, out)
        weight.add_(sign * delta.to(weight.dtype))

    def extra_repr(self) -> str:
        return (f"structure={self.structure.name}, in={self.in_features}, out={self.out_features}, "
                f"rank={self.rank}/{self.capacity}, merged={self.merged}")
