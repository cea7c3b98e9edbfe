"""k from the thresholds (Eq. 13-14) against hand-computed values, and budget properties."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triadapt import TriAdaptConfig
from triadapt.allocator import Allocator
from triadapt.layer import AdapterLayer
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure
from triadapt.thresholds import (FixedThreshold, GrowthContext, LinearThreshold, NoGrowthThreshold,
                                 NonlinearThreshold)


def ctx(step, remaining, rounding="ceil", t0=100, total=1100):
    return GrowthContext(step=step, warmup_steps=t0, total_steps=total, remaining_budget=remaining,
                         initial_budget=remaining, growable=100, rounding=rounding)


# (threshold, step, R, expected ceil, expected floor); a = (step - 100) / 1000
HAND = [
    (LinearThreshold(), 400, 10, 3, 3),  # R·a = 10·0.3 = 3 exactly (a float product gives 3.0000000000000004)
    (LinearThreshold(), 450, 10, 4, 3),  # 10·0.35 = 3.5
    (LinearThreshold(), 200, 7, 1, 1),  # 7·0.1 = 0.7: floor 0 is raised to 1
    (LinearThreshold(), 1100, 13, 13, 13),  # a = 1 spends the rest
    (NonlinearThreshold(), 600, 16, 4, 4),  # 16^0.5 = 4 exactly
    (NonlinearThreshold(), 350, 16, 2, 2),  # 16^0.25 = 2
    (NonlinearThreshold(), 600, 10, 4, 3),  # 10^0.5 = 3.162
    (NonlinearThreshold(), 400, 100, 4, 3),  # 100^0.3 = 3.981
    (NonlinearThreshold(), 110, 50, 2, 1),  # 50^0.01 = 1.040
    (FixedThreshold(3), 400, 10, 3, 3),
    (FixedThreshold(5), 1100, 2, 5, 5),  # the allocator caps k by the budget, not the threshold
]


@pytest.mark.parametrize("threshold,step,remaining,k_ceil,k_floor", HAND)
def test_k_matches_hand_values(threshold, step, remaining, k_ceil, k_floor):
    assert threshold.count(ctx(step, remaining, "ceil")) == k_ceil
    assert threshold.count(ctx(step, remaining, "floor")) == k_floor


def test_none_never_grows():
    assert NoGrowthThreshold().count(ctx(400, 10)) == 0 and NoGrowthThreshold.grows is False


def test_progress_is_exact():
    assert ctx(400, 10).progress == Fraction(3, 10)


def make_allocator(num, init_rank, capacity, **cfg):
    layers = {f"m{i}": AdapterLayer(torch.nn.Linear(2, 2), LoraStructure(), init_rank=init_rank, capacity=capacity,
                                    lora_alpha=1.0, dropout=0.0, init_std=0.1, eps=1e-5) for i in range(num)}
    config = TriAdaptConfig(structure="lora", init_rank=init_rank, max_rank=capacity, **cfg)
    scorer = FrobeniusScorer("fnorm", "r")
    scorer.initialize(layers)
    from triadapt.plugins.registry import registry

    return Allocator(layers, config, scorer, registry().create("threshold", config.threshold, config))


schedules = st.fixed_dictionaries({
    "num": st.integers(1, 8),
    "init_rank": st.integers(1, 3),
    "extra_capacity": st.integers(0, 8),
    "rank_increment": st.integers(1, 4),
    "extra_ref": st.integers(0, 5),
    "warmup_steps": st.integers(0, 20),
    "growth_interval": st.integers(1, 10),
    "span": st.integers(1, 120),
    "threshold": st.sampled_from(["linear", "nonlinear", "fixed"]),
    "rounding": st.sampled_from(["ceil", "floor"]),
    "fixed_k": st.integers(1, 5),
})


@settings(max_examples=150, deadline=None)
@given(schedules)
def test_budget_never_exceeded_and_spent_when_schedule_allows(s):
    capacity = s["init_rank"] + s["extra_capacity"]
    allocator = make_allocator(
        s["num"], s["init_rank"], capacity, ref_rank=s["init_rank"] + s["extra_ref"],
        rank_increment=s["rank_increment"], warmup_steps=s["warmup_steps"], growth_interval=s["growth_interval"],
        total_steps=s["warmup_steps"] + s["span"], threshold=s["threshold"], rounding=s["rounding"],
        fixed_k=s["fixed_k"])
    budget = allocator.initial_budget
    for _ in range(allocator.config.total_steps):
        before = {n: layer.rank for n, layer in allocator.layers.items()}
        event = allocator.step()
        assert allocator.total_rank() <= budget
        assert all(layer.rank <= layer.capacity for layer in allocator.layers.values())
        if event is not None:
            room = sum(min(s["rank_increment"], capacity - before[n]) for n in event.grown)
            assert sum(event.grown.values()) == min(event.budget_before, room)
            assert len(event.grown) <= event.k
            assert all(amount <= s["rank_increment"] for amount in event.grown.values())
    total = allocator.config.total_steps
    last_event_at_end = total % s["growth_interval"] == 0 and total > s["warmup_steps"]
    can_absorb = s["num"] * min(s["rank_increment"], capacity - s["init_rank"]) >= budget - s["num"] * s["init_rank"]
    if s["threshold"] in ("linear", "nonlinear") and last_event_at_end and can_absorb:
        assert allocator.remaining_budget() == 0


def test_last_matrix_gets_the_remainder():
    allocator = make_allocator(3, 1, 6, ref_rank=2, rank_increment=2, warmup_steps=0, growth_interval=1,
                               total_steps=1, threshold="linear")
    event = allocator.step()  # R = 3, a = 1: k = 3, but only 3 ranks remain: 2 + 1
    assert sorted(event.grown.values()) == [1, 2] and allocator.remaining_budget() == 0


def test_events_only_after_warmup_on_interval():
    allocator = make_allocator(2, 1, 8, ref_rank=8, warmup_steps=4, growth_interval=3, total_steps=30,
                               threshold="fixed", fixed_k=1)
    steps = [s for s in range(1, 31) if allocator.step() is not None]
    assert steps == [6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert steps == [e.step for e in allocator.preview()]


def test_preview_matches_what_the_budget_can_feed():
    allocator = make_allocator(3, 1, 6, ref_rank=2, rank_increment=2, warmup_steps=0, growth_interval=1,
                               total_steps=1, threshold="linear")
    (planned,) = allocator.preview()
    assert (planned.step, planned.k, planned.budget_left) == (1, 2, 0)  # k = 3, but 3 ranks feed 2 matrices
