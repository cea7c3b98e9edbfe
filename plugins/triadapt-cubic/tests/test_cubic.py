import pytest

from triadapt import registry
from triadapt.testing.conformance import ThresholdConformance, make_controller, train
from triadapt.thresholds import GrowthContext
from triadapt_cubic import CubicThreshold


@pytest.fixture(autouse=True)
def _entry_points(triadapt_registry):
    yield


class TestCubic(ThresholdConformance):
    threshold = "cubic"


def ctx(step, remaining, total_steps=110, t0=10, budget=80, start=16, increment=1):
    return GrowthContext(step=step, warmup_steps=t0, total_steps=total_steps, remaining_budget=remaining,
                         initial_budget=budget, growable=16, initial_total_rank=start, rank_increment=increment)


def test_hand_values():
    # a = (60 - 10) / 100 = 0.5: target = 80 - 64 · 0.125 = 72; total now 80 - 40 = 40: k = 32
    assert CubicThreshold().count(ctx(60, remaining=40)) == 32
    # Δr = 4: k = ceil(32 / 4) = 8
    assert CubicThreshold().count(ctx(60, remaining=40, increment=4)) == 8
    # already above the target: no growth
    assert CubicThreshold().count(ctx(20, remaining=10)) == 0
    # final_steps = 50: a = 50 / 50 = 1 at t = 60: the whole budget
    assert CubicThreshold(final_steps=50).count(ctx(60, remaining=40)) == 40


def test_budget_is_reached_by_the_end():
    ctl = make_controller(threshold="cubic", total_steps=20)
    train(ctl, 20)
    assert ctl.allocator.remaining_budget() == 0


def test_listed_with_its_distribution():
    info = {p.name: p for p in registry().plugins()}["cubic"]
    assert (info.distribution, info.strategies) == ("triadapt-cubic", {"threshold": ["cubic"]})


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="strategy_options.cubic.t_final=5 is invalid: the options of 'cubic' are "
                                         "final_steps"):
        make_controller(threshold="cubic", strategy_options={"cubic": {"t_final": 5}})
