"""The growth schedule before training: its events, k at each, the budget left, the mean rank use.

``plan_schedule(config, num_matrices)`` replays Eq. 12-14 without a model: an event after
optimizer step t when ``t > t0`` and ``t % ΔT == 0`` while budget is left; the threshold gives
k, capped by the matrices able to grow and by what the budget can feed. Which matrices grow
depends on the scores, known only during training, so the plan assumes growth spreads (the
lowest ranks grow first): a matrix then reaches its capacity only when every matrix does.
The run itself records how many matrices hit their capacity.

The mean rank use is ``∫ Σ_m r_m dt / (T · R0)``: 1.0 means the whole budget was in use for
the whole run (a LoRA baseline at r_ref), and growth late in the run lowers it.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

from triadapt.config import TriAdaptConfig
from triadapt.errors import ConfigError
from triadapt.thresholds import GrowthContext, Threshold, checked_count


@dataclass(frozen=True)
class PlannedEvent:
    """One planned growth event."""

    step: int  # after this optimizer step
    k: int  # matrices that grow (the threshold's k after the caps by growable matrices and by the budget)
    growable: int  # matrices below their capacity at this event
    grown: int  # rank units added (k · Δr, or less where the budget runs out)
    budget_left: int  # R after the event

    @property
    def k_fraction(self) -> float:
        """k over the growable matrices: 1.0 means every matrix grows and the scorer chose nothing."""
        return self.k / self.growable if self.growable else 0.0


@dataclass(frozen=True)
class Schedule:
    """The planned events of a run and what they add up to."""

    total_steps: int
    warmup_steps: int
    growth_interval: int
    num_matrices: int
    initial_budget: int  # R0
    initial_total_rank: int  # M · r_init
    events: tuple[PlannedEvent, ...]
    grows: bool = True  # False for a threshold that never grows (a fixed-rank baseline)

    def __iter__(self) -> Iterator[PlannedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def mean_rank_use(self) -> float:
        """∫ Σ r dt / (T · R0) over the run, if every planned event happens."""
        return rank_use(self.initial_total_rank, [(e.step, e.grown) for e in self.events], self.total_steps,
                        self.initial_budget)

    @property
    def saturated_events(self) -> int:
        """Events at which k reaches every growable matrix."""
        return sum(1 for e in self.events if e.k >= e.growable)

    @property
    def scorer_can_matter(self) -> bool:
        """False when k reaches every growable matrix on more than half of the events."""
        return not self.events or 2 * self.saturated_events <= len(self.events)

    def summary(self, limit: int = 8) -> str:
        """One line: t0, ΔT, the first events as ``t=step:k=k/growable``, the budget left, the mean rank use."""
        if not self.grows:
            return f"no growth: every matrix keeps rank {self.initial_total_rank // max(1, self.num_matrices)}"
        shown = ", ".join(f"t={e.step}:k={e.k}/{e.growable}" for e in self.events[:limit])
        more = f", … ({len(self.events)} events, last t={self.events[-1].step})" if len(self.events) > limit else ""
        left = self.events[-1].budget_left if self.events else self.initial_budget - self.initial_total_rank
        return (f"t0={self.warmup_steps}, ΔT={self.growth_interval} (T/ΔT={self.total_steps / self.growth_interval:.0f});"
                f" growth events: {shown or 'none'}{more}; budget left at the end {left}; "
                f"mean rank use {self.mean_rank_use:.2f}")

    def warning(self) -> str | None:
        """A one-line warning when the scorer cannot matter, else None."""
        if self.scorer_can_matter:
            return None
        return (f"warning: k reaches every growable matrix at {self.saturated_events} of {len(self.events)} growth "
                f"events, so the scorer hardly chooses; give more events (smaller growth_interval, now "
                f"{self.growth_interval}) or a larger budget")


def rank_use(initial_total_rank: int, growth: Sequence[tuple[int, int]], total_steps: int, budget: int) -> float:
    """∫ Σ r dt / (T · R0): growth ``(step, units)`` takes effect from the optimizer step after ``step``."""
    if total_steps <= 0 or budget <= 0:
        return 0.0
    area = initial_total_rank * total_steps + sum(units * max(0, total_steps - step) for step, units in growth)
    return area / (total_steps * budget)


def first_event_step(warmup_steps: int, growth_interval: int) -> int:
    """The first optimizer step t with t > t0 and t % ΔT == 0."""
    return (warmup_steps // growth_interval + 1) * growth_interval


def event_steps(warmup_steps: int, growth_interval: int, total_steps: int) -> list[int]:
    """Optimizer steps t ≤ T with t > t0 and t % ΔT == 0."""
    return list(range(first_event_step(warmup_steps, growth_interval), total_steps + 1, growth_interval))


def plan_schedule(config: TriAdaptConfig, num_matrices: int, threshold: Threshold | None = None, *,
                  require_total_steps: bool = True) -> Schedule:
    """The events a run of ``config`` (``total_steps`` set) over ``num_matrices`` adapted matrices will have.

    Raises `ConfigError` naming the field when the schedule cannot work: T missing for a
    threshold that needs it (unless ``require_total_steps`` is false: a trainer sets T later),
    a budget below the starting ranks, or no event at all.
    """
    if threshold is None:
        from triadapt.plugins.registry import registry

        threshold = registry().create("threshold", config.threshold, config)
    if num_matrices < 1:
        raise ConfigError("target_modules", config.target_modules, "matches no matrix: nothing to adapt")
    budget, start = config.budget(num_matrices), config.init_rank * num_matrices
    if threshold.grows and budget < start:
        raise ConfigError("total_budget", budget, f"must be >= init_rank × matrices = {config.init_rank} × "
                                                  f"{num_matrices} = {start} (the ranks at the start)")
    total = config.total_steps
    if config.uses_legacy_interval and threshold.grows and not threshold.needs_total_steps and require_total_steps:
        warnings.warn("TriAdaptConfig without total_steps, warmup_steps and growth_interval grows every 1000 "
                      "steps; this fallback is deprecated since 0.2 and goes in 0.3: give total_steps (t0 = ΔT = "
                      "T/50 are then derived) or warmup_steps and growth_interval", DeprecationWarning, stacklevel=3)
    if total is None:
        if threshold.grows and threshold.needs_total_steps and require_total_steps:
            raise ConfigError("total_steps", None, f"threshold {threshold.name!r} needs the total number of "
                                                   f"optimizer steps T (an integer > warmup_steps)")
        return Schedule(0, config.warmup_steps, config.growth_interval, num_matrices, budget, start, (),
                        threshold.grows)
    steps = event_steps(config.warmup_steps, config.growth_interval, total) if threshold.grows else []
    if threshold.grows and not steps:
        first = first_event_step(config.warmup_steps, config.growth_interval)
        raise ConfigError("total_steps", total, f"allows no growth event with warmup_steps={config.warmup_steps} "
                                                f"and growth_interval={config.growth_interval}; the first event "
                                                f"would be at step {first}")
    events = _simulate(config, threshold, num_matrices, budget, steps)
    return Schedule(total, config.warmup_steps, config.growth_interval, num_matrices, budget, start, tuple(events),
                    threshold.grows)


def _simulate(config: TriAdaptConfig, threshold: Threshold, num_matrices: int, budget: int,
              steps: list[int]) -> list[PlannedEvent]:
    ranks = [(config.init_rank, index) for index in range(num_matrices)]  # a min-heap: the lowest ranks grow first
    heapq.heapify(ranks)
    capacity, increment = config.capacity, config.rank_increment
    remaining, events = budget - config.init_rank * num_matrices, []
    for step in steps:
        growable = sum(1 for rank, _ in ranks if rank < capacity)
        if remaining <= 0 or not growable:
            break
        context = GrowthContext(step=step, warmup_steps=config.warmup_steps, total_steps=config.total_steps,
                                remaining_budget=remaining, initial_budget=budget, growable=growable,
                                rounding=config.rounding, initial_total_rank=config.init_rank * num_matrices,
                                rank_increment=increment)
        k = min(checked_count(threshold, context), growable)
        if k <= 0:
            continue
        chosen = [heapq.heappop(ranks) for _ in range(k)]
        grown = matrices = 0
        for rank, index in chosen:
            amount = max(0, min(increment, capacity - rank, remaining - grown))
            grown, matrices = grown + amount, matrices + (amount > 0)
            heapq.heappush(ranks, (rank + amount, index))
        remaining -= grown
        events.append(PlannedEvent(step=step, k=matrices, growable=growable, grown=grown, budget_left=remaining))
    return events
