"""Thresholds: how many matrices k grow at a growth event (paper Eq. 13-14).

With ``a = (t − t0) / (T − t0)`` and R the remaining budget:
``linear`` k = ⌈R·a⌉ (Eq. 13), ``nonlinear`` k = ⌈R^a⌉ = ⌈exp(a·ln R)⌉ (Eq. 14),
``fixed`` k = K, ``none`` never grows (the LoRA baseline). ``rounding='floor'`` reproduces
the reference code; k is then raised to at least 1. The allocator caps k by the number of
matrices still able to grow and by the budget.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class GrowthContext:
    """What a threshold may look at when an event is due."""

    step: int  # t, optimizer steps done
    warmup_steps: int  # t0
    total_steps: int | None  # T
    remaining_budget: int  # R = R0 − Σ r_m
    initial_budget: int  # R0
    growable: int  # matrices below their capacity
    rounding: str = "ceil"
    initial_total_rank: int = 0  # Σ r_m at the start (M · r_init)
    rank_increment: int = 1  # Δr

    @property
    def progress(self) -> Fraction:
        """a = (t − t0) / (T − t0), exact."""
        if self.total_steps is None:
            raise ValueError("total_steps is None: this threshold needs T (set TriAdaptConfig.total_steps)")
        return Fraction(self.step - self.warmup_steps, self.total_steps - self.warmup_steps)

    def round(self, value: Fraction | float) -> int:
        """Round per ``rounding``; a float within 1e-9 of an integer counts as that integer."""
        if isinstance(value, float) and abs(value - round(value)) < 1e-9:
            value = Fraction(round(value))
        k = math.ceil(value) if self.rounding == "ceil" else math.floor(value)
        return max(int(k), 1)


class Threshold(ABC):
    """Interface of a threshold strategy: ``count`` returns k ≥ 0 (0: no growth this event).

    The config, the schedule and the allocator ask the threshold what it is rather than test its
    name, so a plugin's threshold is treated as a built-in with the same answers: ``grows = False``
    (as 'none') reserves no capacity beyond ``init_rank``, plans no event and never calls ``count``;
    ``needs_total_steps = True`` (as 'linear') makes T required before training.
    """

    name: str = ""
    grows: bool = True  # False for strategies that never grow: the allocator then schedules nothing
    needs_total_steps: bool = False  # True when count reads T (ctx.total_steps, ctx.progress)

    @abstractmethod
    def count(self, ctx: GrowthContext) -> int:
        """Number of matrices to grow at this event, before the allocator's caps."""


def checked_count(threshold: Threshold, ctx: GrowthContext) -> int:
    """``threshold.count(ctx)``, refused with the strategy's name unless it is an integer >= 0."""
    from triadapt.errors import PluginError

    k = threshold.count(ctx)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise PluginError(f"threshold {threshold.name!r} returned k={k!r} at step {ctx.step}: a threshold's count "
                          f"must be an integer >= 0")
    return k


class LinearThreshold(Threshold):
    """k = ⌈R · a⌉ (Eq. 13)."""

    name = "linear"
    needs_total_steps = True

    def count(self, ctx: GrowthContext) -> int:
        return ctx.round(ctx.remaining_budget * ctx.progress)


class NonlinearThreshold(Threshold):
    """k = ⌈exp(a · ln R)⌉ = ⌈R^a⌉ (Eq. 14)."""

    name = "nonlinear"
    needs_total_steps = True

    def count(self, ctx: GrowthContext) -> int:
        return ctx.round(math.exp(float(ctx.progress) * math.log(ctx.remaining_budget)))


class FixedThreshold(Threshold):
    """k = K at every event (the paper's Fixed-k, as IncreLoRA)."""

    name = "fixed"

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"fixed_k={k} is invalid: must be >= 1")
        self.k = int(k)

    def count(self, ctx: GrowthContext) -> int:
        return self.k


class NoGrowthThreshold(Threshold):
    """Never grows: every matrix keeps its initial rank (the LoRA baseline at r_init = r_ref)."""

    name = "none"
    grows = False

    def count(self, ctx: GrowthContext) -> int:
        return 0
