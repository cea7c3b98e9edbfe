"""The planned schedule (`plan_schedule`): hand-computed plans, the mean rank use, and the allocator as oracle."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triadapt import ConfigError, TriAdaptConfig
from triadapt.allocator import Allocator
from triadapt.layer import AdapterLayer
from triadapt.plugins.registry import registry
from triadapt.schedule import plan_schedule, rank_use
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure


def test_hand_computed_linear_plan():
    # M = 2, r_init = 1, R0 = 4: R = 2 at the first event; events after steps 2 and 4 (t0 = 0, ΔT = 2, T = 4)
    cfg = TriAdaptConfig(threshold="linear", ref_rank=2, warmup_steps=0, growth_interval=2, total_steps=4)
    plan = plan_schedule(cfg, 2)
    # t=2: a = 1/2, k = ⌈2·½⌉ = 1, R = 1; t=4: a = 1, k = ⌈1·1⌉ = 1, R = 0
    assert [(e.step, e.k, e.growable, e.grown, e.budget_left) for e in plan] == [(2, 1, 2, 1, 1), (4, 1, 2, 1, 0)]
    # Σr over steps 1..4: 2, 2, 3, 3 (the rank grown after step 2 is used from step 3 on) = 10 of T·R0 = 16
    assert plan.mean_rank_use == pytest.approx(10 / 16)
    assert [e.k_fraction for e in plan] == [0.5, 0.5]
    assert plan.saturated_events == 0 and plan.scorer_can_matter


def test_saturated_plan_warns_in_one_line():
    # 2 matrices, R = 14 at the first event: linear k = ⌈14·a⌉ ≥ 2 at every event, i.e. every matrix grows
    cfg = TriAdaptConfig(threshold="linear", ref_rank=8, warmup_steps=10, growth_interval=10, total_steps=100)
    plan = plan_schedule(cfg, 2)
    assert plan.saturated_events == len(plan) == 7  # budget spent at t=80 (2 units an event)
    warning = plan.warning()
    assert warning is not None and "\n" not in warning and "growth_interval" in warning
    assert "k reaches every growable matrix at 7 of 7" in warning


def test_summary_names_the_figures():
    cfg = TriAdaptConfig(threshold="linear", ref_rank=2, warmup_steps=0, growth_interval=2, total_steps=4)
    text = plan_schedule(cfg, 2).summary()
    assert "t0=0, ΔT=2" in text and "t=2:k=1/2" in text and "mean rank use 0.62" in text


def test_rank_use_of_a_fixed_rank_run_is_one():
    assert rank_use(288, [], 100, 288) == 1.0
    assert rank_use(36, [(50, 252)], 100, 288) == pytest.approx((36 * 100 + 252 * 50) / (100 * 288))


def test_no_event_is_a_one_line_error_naming_total_steps():
    cfg = TriAdaptConfig(threshold="linear", warmup_steps=10, growth_interval=20, total_steps=15)
    with pytest.raises(ConfigError, match=r"total_steps=15 is invalid: allows no growth event .* step 20"):
        plan_schedule(cfg, 4)


def test_budget_below_the_starting_ranks_names_total_budget():
    cfg = TriAdaptConfig(total_budget=4, total_steps=100, warmup_steps=10, growth_interval=10)
    with pytest.raises(ConfigError, match=r"total_budget=4 is invalid: must be >= init_rank × matrices = 1 × 12"):
        plan_schedule(cfg, 12)


def test_missing_total_steps_names_the_field():
    with pytest.raises(ConfigError, match="total_steps=None is invalid: threshold 'nonlinear' needs"):
        plan_schedule(TriAdaptConfig(threshold="nonlinear"), 3)


def test_no_growth_has_an_empty_plan_of_full_use():
    cfg = TriAdaptConfig(structure="lora", threshold="none", init_rank=8, total_steps=50)
    plan = plan_schedule(cfg, 3)
    assert len(plan) == 0 and plan.mean_rank_use == 1.0 and plan.scorer_can_matter
    assert plan.summary() == "no growth: every matrix keeps rank 8"


def _run_allocator(cfg: TriAdaptConfig, num: int) -> list[tuple[int, int, int]]:
    layers = {f"m{i}": AdapterLayer(torch.nn.Linear(3, 3), LoraStructure(), init_rank=cfg.init_rank,
                                    capacity=cfg.capacity, lora_alpha=1.0, dropout=0.0, init_std=0.1, eps=1e-5)
              for i in range(num)}
    scorer = FrobeniusScorer("fnorm", "r")
    scorer.initialize(layers)
    allocator = Allocator(layers, cfg, scorer, registry().create("threshold", cfg.threshold, cfg))
    allocator.validate_schedule()
    events = [allocator.step() for _ in range(cfg.total_steps)]
    return [(e.step, len(e.grown), e.budget_left) for e in events if e is not None]


@settings(max_examples=60, deadline=None)
@given(num=st.integers(1, 6), init_rank=st.integers(1, 2), ref_rank=st.integers(2, 5), increment=st.integers(1, 3),
       warmup=st.integers(0, 6), interval=st.integers(1, 5), extra=st.integers(1, 40),
       threshold=st.sampled_from(["linear", "nonlinear", "fixed"]), rounding=st.sampled_from(["ceil", "floor"]))
def test_plan_equals_what_the_allocator_does(num, init_rank, ref_rank, increment, warmup, interval, extra, threshold,
                                             rounding):
    """Oracle: with room for the whole budget in every matrix, the plan is exactly the allocator's run."""
    budget = max(ref_rank, init_rank) * num
    cfg = TriAdaptConfig(structure="lora", threshold=threshold, init_rank=init_rank, ref_rank=max(ref_rank, init_rank),
                         rank_increment=increment, warmup_steps=warmup, growth_interval=interval,
                         total_steps=warmup + extra, rounding=rounding, fixed_k=2 if threshold == "fixed" else None,
                         max_rank=budget)
    try:
        plan = plan_schedule(cfg, num)
    except ConfigError:  # a schedule without events: the allocator must refuse it too
        with pytest.raises(ConfigError):
            _run_allocator(cfg, num)
        return
    assert [(e.step, e.k, e.budget_left) for e in plan] == _run_allocator(cfg, num)
