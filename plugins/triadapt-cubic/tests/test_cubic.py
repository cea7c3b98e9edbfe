import importlib.metadata as md

import pytest

from triadapt import StrategyConfigError, StrategyOptionError, TriAdaptConfig, registry
from triadapt.testing.conformance import ThresholdConformance, make_controller, train
from triadapt.thresholds import GrowthContext
from triadapt_cubic import CubicOptions, CubicThreshold

VERSION = md.version("triadapt-cubic")  # as installed


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
    with pytest.raises(StrategyOptionError) as info:
        make_controller(threshold="cubic", strategy_options={"cubic": {"t_final": 5}})
    assert str(info.value) == ("strategy_options.cubic.t_final=5 is invalid: threshold 'cubic' of plugin 'cubic' "
                               f"(distribution triadapt-cubic {VERSION}) has no option 't_final'; its options are "
                               "final_steps: int = 0")


@pytest.mark.parametrize("value", ["8", 2.5, True, None])
def test_ill_typed_option_is_named(value):
    with pytest.raises(StrategyOptionError) as info:
        TriAdaptConfig(threshold="cubic", total_steps=100, strategy_options={"cubic": {"final_steps": value}})
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"strategy_options.cubic.final_steps={value!r} is invalid: option "
                                      f"'final_steps' of threshold 'cubic' of plugin 'cubic' (distribution "
                                      f"triadapt-cubic {VERSION}) must be int; its options are final_steps: int = 0")


def test_options_reach_the_threshold_with_defaults_filled():
    assert make_controller(threshold="cubic").allocator.threshold.final_steps == 0
    ctl = make_controller(threshold="cubic", strategy_options={"cubic": {"final_steps": 4}})
    assert ctl.allocator.threshold.final_steps == 4
    assert registry().resolve_options("threshold", "cubic", None) == CubicOptions(final_steps=0)


def test_a_refused_value_is_one_line_naming_the_distribution():
    with pytest.raises(StrategyConfigError) as info:
        TriAdaptConfig(threshold="cubic", total_steps=100, strategy_options={"cubic": {"final_steps": -1}})
    assert str(info.value) == ("strategy_options.cubic={'final_steps': -1} is invalid: threshold 'cubic' of plugin "
                               f"'cubic' (distribution triadapt-cubic {VERSION}) refused them: ValueError: "
                               "strategy_options.cubic.final_steps=-1 is invalid: an integer >= 0")
    assert isinstance(info.value.__cause__, ValueError)


def test_provider_is_the_distribution():
    assert registry().provider("threshold", "cubic") == ("triadapt-cubic", VERSION)
