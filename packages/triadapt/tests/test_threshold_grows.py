"""The config asks the threshold whether it grows and whether it needs T, never its name: a plugin's threshold
that never grows is treated as 'none' is, and one that grows without T as 'fixed' is."""

import pytest

from triadapt import ConfigError, ThresholdSpec, TriAdaptConfig, hookimpl, inject, plan_schedule
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel
from triadapt.thresholds import Threshold


class Frozen(Threshold):
    """A plugin's fixed-rank baseline: never grows, whatever its name."""

    name = "frozen"
    grows = False

    def count(self, ctx):
        raise AssertionError("a threshold that does not grow is never asked for k")


class EveryOther(Threshold):
    """Grows two matrices per event without needing T."""

    name = "every-other"

    def count(self, ctx):
        return 2


class Thresholds:
    @staticmethod
    @hookimpl
    def triadapt_thresholds():
        return [ThresholdSpec("frozen", lambda cfg: Frozen()), ThresholdSpec("every-other", lambda cfg: EveryOther())]


@pytest.fixture(autouse=True)
def _plugin(register_plugin):
    register_plugin(Thresholds(), name="thresholds")


def test_a_threshold_that_never_grows_keeps_the_initial_rank_as_capacity():
    for threshold in ("none", "frozen"):
        config = TriAdaptConfig(threshold=threshold, init_rank=4, ref_rank=8)
        assert not config.threshold_grows and config.capacity == 4
    grows = TriAdaptConfig(threshold="every-other", init_rank=4, ref_rank=8)
    assert grows.threshold_grows and grows.capacity == 16


def test_a_threshold_that_never_grows_needs_no_room_for_events():
    with pytest.raises(ConfigError, match=r"total_steps=5 is invalid: must be > warmup_steps \(10\)"):
        TriAdaptConfig(threshold="every-other", total_steps=5, warmup_steps=10, growth_interval=1)
    for threshold in ("none", "frozen"):
        config = TriAdaptConfig(threshold=threshold, total_steps=5, warmup_steps=10, growth_interval=1)
        schedule = plan_schedule(config, 8)
        assert not schedule.grows and len(schedule) == 0 and schedule.summary().startswith("no growth")


def test_a_threshold_that_never_grows_trains_without_growth():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, threshold="frozen", init_rank=2,
                                            total_steps=6, warmup_steps=1, growth_interval=1, seed=0))
    train(ctl, 6)
    assert not ctl.events and set(ctl.ranks.values()) == {2}
    assert all(layer.capacity == 2 for layer in ctl.layers.values())


def test_a_growing_threshold_without_total_steps_plans_like_fixed():
    config = TriAdaptConfig(threshold="every-other", warmup_steps=1, growth_interval=2, total_steps=9, ref_rank=2)
    assert [(e.step, e.k) for e in plan_schedule(config, 4)] == [(2, 2), (4, 2)]
    no_t = TriAdaptConfig(threshold="every-other", warmup_steps=1, growth_interval=2)
    assert plan_schedule(no_t, 4).events == ()  # no T: nothing to plan, and no error (it does not need T)


def test_fixed_k_is_checked_by_the_fixed_threshold_only():
    with pytest.raises(ConfigError, match="fixed_k=None is invalid: threshold 'fixed' needs an integer fixed_k >= 1"):
        TriAdaptConfig(threshold="fixed")
    with pytest.raises(ConfigError, match="fixed_k=0 is invalid"):
        TriAdaptConfig(threshold="fixed", fixed_k=0)
    assert TriAdaptConfig(threshold="frozen").fixed_k is None  # other thresholds do not need it
