"""How the rank units of one matrix are stored: one parameter, one row per unit.

A structure names the tensors each rank unit adds (``unit_shapes``); unit ``i`` of a matrix
is row ``i`` of a single ``(capacity, width)`` parameter, and each of its tensors is a slice
of that row. Every key gets the width of its largest unit, so the triangular structure's
``l`` and ``u`` (length i+1 for unit i) become the rows of two lower-triangular r×r blocks,
zero above the diagonal. With one parameter per matrix, a training step touches one tensor
per matrix (as LoRA's two), instead of one per unit and key.

What a grown unit needs from the optimizer (its initial values and no history when it joins,
its own bias correction while young) is restored by `triadapt.fresh_units`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class UnitLayout:
    """Offsets of a structure's unit tensors inside a unit row, for one matrix."""

    keys: tuple[str, ...]
    offsets: dict[str, int]
    widths: dict[str, int]
    shapes: tuple[dict[str, tuple[int, ...]], ...]  # per unit index: key -> shape
    width: int

    @classmethod
    def build(cls, structure: Any, capacity: int, in_features: int, out_features: int) -> "UnitLayout":
        shapes = tuple(dict(structure.unit_shapes(i, in_features, out_features)) for i in range(capacity))
        for index, unit in enumerate(shapes):
            for key, shape in unit.items():
                if not isinstance(shape, tuple) or not all(isinstance(n, int) and n > 0 for n in shape):
                    raise TypeError(f"structure {structure.name!r}: unit_shapes({index}, {in_features}, "
                                    f"{out_features})[{key!r}]={shape!r} is invalid: must be a tuple of positive "
                                    f"integers")
        keys = tuple(shapes[0]) if shapes else ()
        for index, unit in enumerate(shapes):
            if tuple(unit) != keys:
                raise ValueError(f"structure {structure.name!r}: unit {index} has tensors {sorted(unit)}, unit 0 "
                                 f"has {sorted(keys)}; every unit must name the same tensors")
        widths = {key: max(math.prod(unit[key]) for unit in shapes) for key in keys}
        offsets, start = {}, 0
        for key in keys:
            offsets[key] = start
            start += widths[key]
        return cls(keys, offsets, widths, shapes, start)

    def numel(self, index: int) -> int:
        """Entries unit ``index`` really has (padding excluded)."""
        return sum(math.prod(shape) for shape in self.shapes[index].values())

    def unit_views(self, row: Tensor, index: int) -> dict[str, Tensor]:
        """The tensors of unit ``index`` as views of its row (shared storage, autograd-aware)."""
        out = {}
        for key in self.keys:
            shape = self.shapes[index][key]
            start = self.offsets[key]
            out[key] = row[start:start + math.prod(shape)].view(shape)
        return out


_MASKS: dict[tuple, tuple[Tensor, Tensor]] = {}


def rank_masks(ranks: tuple[int, ...], capacity: int, dtype: torch.dtype,
               device: torch.device) -> tuple[Tensor, Tensor]:
    """For a stack of matrices at ``ranks``: 1 on each one's first ``rank`` rows ``(G, cap, 1)``, and the
    matching partial identities ``(G, cap, cap)``; cached per rank pattern (ranks change only at growth)."""
    key = (ranks, capacity, dtype, device)
    if key not in _MASKS:
        if len(_MASKS) > 64:
            _MASKS.clear()
        mask = torch.tensor([[float(i < rank) for i in range(capacity)] for rank in ranks], dtype=dtype,
                            device=device)  # (G, cap)
        _MASKS[key] = (mask.unsqueeze(-1), torch.diag_embed(mask))
    return _MASKS[key]


def group_by_layout(layers: Any) -> dict[tuple, list[Any]]:
    """Layers whose unit parameters can be stacked: same shape, layout, dtype and device."""
    groups: dict[tuple, list[Any]] = {}
    for layer in layers:
        units = layer.units
        key = (tuple(units.shape), tuple(layer.layout.offsets.items()), units.dtype, units.device)
        groups.setdefault(key, []).append(layer)
    return groups
