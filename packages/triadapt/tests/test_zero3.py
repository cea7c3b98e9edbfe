"""`triadapt.zero3.make_units_whole` on parameters carrying the attributes ZeRO-3 sets (no DeepSpeed needed)."""

import pytest
import torch

from triadapt import TriAdaptError
from triadapt.zero3 import make_units_whole


def zero3_param(numel, persist, local=None):
    param = torch.nn.Parameter(torch.zeros(numel if local is None else local))
    param.ds_persist, param.ds_numel = persist, numel
    return param


def test_units_that_would_be_partitioned_name_the_threshold():
    units = [zero3_param(12, True), zero3_param(40, False), zero3_param(30, False)]
    with pytest.raises(TriAdaptError, match=r"2 rank-unit parameters would be partitioned by ZeRO-3; set "
                                            r"zero_optimization.stage3_param_persistence_threshold >= 40 in cfg.json"):
        make_units_whole(units, where="cfg.json")


def test_persistent_units_are_gathered_once_and_checked_whole():
    units = [zero3_param(6, True), zero3_param(8, True)]
    calls = []
    units[0].all_gather = lambda params: calls.append(list(params))  # what DeepSpeed puts on its parameters
    make_units_whole(units)
    assert calls == [units]
    units.append(zero3_param(10, True, local=5))  # still a partition after the gather
    with pytest.raises(TriAdaptError, match="1 rank-unit parameters are not whole after gathering"):
        make_units_whole(units)
