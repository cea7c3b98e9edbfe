"""DeepSpeed ZeRO-3 and the rank units, without importing DeepSpeed (it reads the attributes ZeRO-3 sets).

The allocator, the scorers and the regulariser read every unit row, so under ZeRO-3 the unit
parameters must be persistent (``stage3_param_persistence_threshold`` at least the largest one):
DeepSpeed then keeps them whole on every process and gathers them again after each step.
"""

from __future__ import annotations

from torch import nn

from triadapt.errors import TriAdaptError


def make_units_whole(unit_params: list[nn.Parameter], where: str = "the DeepSpeed config") -> None:
    """After ``deepspeed.initialize`` under ZeRO-3: gather every unit parameter once (they stay whole).

    Raises `TriAdaptError` when one is not persistent (a threshold set too low in ``where``) or is
    still partitioned after the gather.
    """
    partitioned = [p for p in unit_params if not getattr(p, "ds_persist", False)]
    if partitioned:
        raise TriAdaptError(f"{len(partitioned)} rank-unit parameters would be partitioned by ZeRO-3; set "
                            f"zero_optimization.stage3_param_persistence_threshold >= "
                            f"{max(p.ds_numel for p in partitioned)} in {where} (or leave it 'auto')")
    unit_params[0].all_gather(unit_params)
    empty = [p for p in unit_params if p.numel() != p.ds_numel]
    if empty:
        raise TriAdaptError(f"{len(empty)} rank-unit parameters are not whole after gathering under ZeRO-3")
