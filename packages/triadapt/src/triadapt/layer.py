"""`AdapterLayer`: wraps one `nn.Linear` (or GPT-2 `Conv1D`) with a growable adapter.

Forward (paper Eq. 5): ``h = W0 x + α / (r + ε) · B (L + U) A · dropout(x)`` with r the
*current* rank. Every rank unit up to the reserved capacity exists as parameters from
construction on; growth only raises the integer ``rank``, and units beyond it take no part
in the forward, so they get no gradient (``grad is None``) and optimizers skip them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from triadapt.structures import Factors, Structure

UNITS_ATTR = "triadapt_units"


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


class RankUnit(nn.Module):
    """The parameters that one unit of rank adds (names given by the structure)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        for key, shape in shapes.items():
            self.register_parameter(key, nn.Parameter(torch.empty(shape)))

    def tensors(self) -> dict[str, Tensor]:
        return dict(self.named_parameters(recurse=False))


class AdapterLayer(nn.Module):
    """A frozen base layer plus a TriAdaptLoRA adapter of growable rank."""

    def __init__(self, base_layer: nn.Module, structure: Structure, *, init_rank: int, capacity: int,
                 lora_alpha: float, dropout: float, init_std: float, eps: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.base_layer = base_layer
        self.structure = structure
        self.in_features, self.out_features = base_shape(base_layer)
        self.lora_alpha, self.eps, self.capacity = float(lora_alpha), float(eps), int(capacity)
        self.rank = int(init_rank)
        self.merged = False
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        units = []
        for index in range(self.capacity):
            unit = RankUnit(structure.unit_shapes(index, self.in_features, self.out_features))
            structure.init_unit(index, unit.tensors(), initial=index < init_rank, std=init_std, generator=generator)
            units.append(unit)
        setattr(self, UNITS_ATTR, nn.ModuleList(units))
        self._unit_tensors: list[dict[str, Tensor]] | None = None  # per-unit parameter dicts, built once
        self._cached_factors: tuple[Factors, tuple[int, ...]] | None = None  # last training forward's factors

    # -- rank -------------------------------------------------------------------------------------
    @property
    def units(self) -> nn.ModuleList:
        return getattr(self, UNITS_ATTR)

    @property
    def scale(self) -> float:
        return self.lora_alpha / (self.rank + self.eps)

    def set_rank(self, rank: int) -> None:
        if not 0 <= rank <= self.capacity:
            raise ValueError(f"rank={rank} is invalid: must be in [0, {self.capacity}] (the reserved capacity)")
        if self.merged:
            raise RuntimeError("cannot change the rank of a merged adapter: unmerge() first")
        self.rank = int(rank)
        self._cached_factors = None

    def active_units(self) -> Iterator[RankUnit]:
        return iter(self.units[: self.rank])

    def factors(self) -> Factors:
        """The active factors (differentiable views of the unit parameters)."""
        if self.rank == 0:
            raise RuntimeError("an adapter of rank 0 has no factors")
        if self._unit_tensors is None:
            self._unit_tensors = [u.tensors() for u in self.units]
        return self.structure.assemble(self._unit_tensors[: self.rank])

    def _versions(self) -> tuple[int, ...]:
        """In-place update counters of the active parameters: any optimizer step or copy changes them."""
        return tuple(p._version for unit in (self._unit_tensors or [])[: self.rank] for p in unit.values())

    def take_cached_factors(self) -> Factors | None:
        """Factors assembled by the last training forward if no active parameter changed since (consumed once)."""
        cached, self._cached_factors = self._cached_factors, None
        if cached is None or cached[0].rank != self.rank or cached[1] != self._versions():
            return None
        return cached[0]

    def _apply(self, fn, recurse=True):  # .to() / .half() may replace parameter tensors: rebuild the cache
        self._unit_tensors, self._cached_factors = None, None
        return super()._apply(fn, recurse)

    def delta_weight(self) -> Tensor:
        """The scaled update α/(r+ε)·ΔW in the (out, in) layout of nn.Linear, float32."""
        return self.factors().delta_weight() * self.scale

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.merged or self.rank == 0:
            return result
        factors = self.factors()
        if self.training and torch.is_grad_enabled():
            self._cached_factors = (factors, self._versions())  # the regulariser of this step may reuse them
        adapter_in = self.dropout(x.to(factors.down.dtype))  # adapter math in the adapter dtype (fp32)
        delta = factors.apply(adapter_in) * self.scale  # (..., d)
        return result + delta.to(result.dtype)

    # -- merge ------------------------------------------------------------------------------------
    def merge(self) -> None:
        """Add the scaled ΔW into the base weight; the forward then skips the adapter."""
        if self.merged:
            return
        with torch.no_grad():
            self._add_to_base(self.delta_weight(), sign=1.0)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        with torch.no_grad():
            self._add_to_base(self.delta_weight(), sign=-1.0)
        self.merged = False

    @torch.no_grad()
    def _add_to_base(self, delta: Tensor, sign: float) -> None:
        weight = self.base_layer.weight
        delta = delta.T if is_conv1d(self.base_layer) else delta  # Conv1D weight is (in, out)
        weight.add_(sign * delta.to(weight.dtype))

    def extra_repr(self) -> str:
        return (f"structure={self.structure.name}, in={self.in_features}, out={self.out_features}, "
                f"rank={self.rank}/{self.capacity}, merged={self.merged}")
