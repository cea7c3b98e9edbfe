"""The step-weighted mean rank of benchmarks/quality/rank_use.py, against hand-computed values."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "quality" / "rank_use.py"
spec = importlib.util.spec_from_file_location("rank_use", SCRIPT)
rank_use = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rank_use)


def test_piecewise_constant_mean():
    # rank 36 for steps 0-14, 38 for 14-21, 40 for 21-30: (14·36 + 7·38 + 9·40) / 30 = 1130 / 30
    assert rank_use.mean_total_rank([(0, 36), (14, 38), (21, 40)], 30) == pytest.approx(1130 / 30)


def test_no_growth_is_the_constant_rank():
    assert rank_use.mean_total_rank([(0, 288)], 126) == 288.0
