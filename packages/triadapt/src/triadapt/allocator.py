"""The rank allocator: budget (Eq. 12), event schedule, selection and growth.

An event happens after optimizer step t when ``t > t0``, ``t % ΔT == 0``, the remaining
budget ``R = R0 − Σ r_m`` is positive and some matrix is below its capacity. The
threshold gives k; the scorer ranks the matrices; the k best (ties broken by module
order) grow by Δr each, never beyond their capacity and never beyond the budget (the
last one grows by what is left).
"""

from __future__ import annotations

from typing import Any, Mapping

from triadapt.config import TriAdaptConfig
from triadapt.errors import ConfigError
from triadapt.events import GrowthEvent
from triadapt.layer import AdapterLayer
from triadapt.schedule import PlannedEvent, Schedule, plan_schedule
from triadapt.scorers import Scorer, checked_scores
from triadapt.thresholds import GrowthContext, Threshold, checked_count


class Allocator:
    """Decides, at each optimizer step, whether and which matrices grow."""

    def __init__(self, layers: Mapping[str, AdapterLayer], config: TriAdaptConfig, scorer: Scorer,
                 threshold: Threshold):
        self.layers = dict(layers)
        self.order = {name: i for i, name in enumerate(self.layers)}
        self.config, self.scorer, self.threshold = config, scorer, threshold
        self.initial_budget = config.budget(len(self.layers))
        self.initial_total_rank = self.total_rank()
        self.step_count = 0
        self.observed_step = 0  # the step whose gradients the scorer has seen
        self.events: list[GrowthEvent] = []
        self.check_budget()

    # -- budget -----------------------------------------------------------------------------------
    def total_rank(self) -> int:
        return sum(layer.rank for layer in self.layers.values())

    def remaining_budget(self) -> int:
        """R = R0 − Σ r_m (Eq. 12)."""
        return self.initial_budget - self.total_rank()

    def check_budget(self) -> None:
        if self.threshold.grows and self.remaining_budget() < 0:
            raise ConfigError("total_budget", self.initial_budget,
                              f"must be >= init_rank × matrices = {self.total_rank()} (the ranks at the start)")

    def growable(self) -> list[str]:
        return [name for name, layer in self.layers.items() if layer.rank < layer.capacity]

    # -- schedule ---------------------------------------------------------------------------------
    def is_event_step(self, step: int) -> bool:
        return step > self.config.warmup_steps and step % self.config.growth_interval == 0

    def context(self, step: int, remaining: int, growable: int) -> GrowthContext:
        return GrowthContext(step=step, warmup_steps=self.config.warmup_steps, total_steps=self.config.total_steps,
                             remaining_budget=remaining, initial_budget=self.initial_budget, growable=growable,
                             rounding=self.config.rounding, initial_total_rank=self.initial_total_rank,
                             rank_increment=self.config.rank_increment)

    def validate_schedule(self) -> Schedule:
        """Fail before step 1 when the schedule cannot work; return the planned events."""
        return plan_schedule(self.config, len(self.layers), self.threshold)

    def preview(self) -> list[PlannedEvent]:
        """The planned events (see `triadapt.schedule`: growth is assumed to spread over the matrices)."""
        return list(self.validate_schedule())

    # -- the per-step entry point -----------------------------------------------------------------
    def observe(self) -> None:
        """Let a gradient-reading scorer see the gradients of the coming optimizer step (once per step)."""
        upcoming = self.step_count + 1
        if self.scorer.observes_steps and self.observed_step != upcoming:
            self.scorer.observe(self.layers, upcoming)
            self.observed_step = upcoming

    def step(self) -> GrowthEvent | None:
        """Count one optimizer step; grow if an event is due. Returns the event, if any."""
        self.observe()  # no-op when the training loop already called it before optimizer.step()
        self.step_count += 1
        return self.maybe_grow(self.step_count)

    def maybe_grow(self, step: int) -> GrowthEvent | None:
        if not self.threshold.grows or not self.is_event_step(step):
            return None
        remaining, growable = self.remaining_budget(), self.growable()
        if remaining <= 0 or not growable:
            return None
        k = checked_count(self.threshold, self.context(step, remaining, len(growable)))
        if k <= 0:
            return None
        k = min(k, len(growable))
        scores = checked_scores(self.scorer, self.layers)
        chosen = sorted(growable, key=lambda name: (-scores[name], self.order[name]))[:k]
        grown = self.grow(chosen, remaining, step)
        event = GrowthEvent(step=step, k=k, grown=grown, budget_before=remaining,
                            budget_left=self.remaining_budget(), scores=scores)
        self.events.append(event)
        return event

    def grow(self, chosen: list[str], remaining: int, step: int | None = None) -> dict[str, int]:
        grown: dict[str, int] = {}
        for name in chosen:
            layer = self.layers[name]
            amount = min(self.config.rank_increment, layer.capacity - layer.rank, remaining)
            if amount <= 0:
                break
            layer.grow(amount, self.step_count if step is None else step)
            remaining -= amount
            grown[name] = amount
        return grown

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_count,
            "ranks": {name: layer.rank for name, layer in self.layers.items()},
            "scorer": self.scorer.state_dict(),
            "events": [event.to_dict() for event in self.events],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ranks = state["ranks"]
        if set(ranks) != set(self.layers):
            missing, extra = sorted(set(self.layers) - set(ranks)), sorted(set(ranks) - set(self.layers))
            raise ValueError(f"allocator state does not fit these adapters: missing {missing[:3]}, "
                             f"unexpected {extra[:3]}")
        events = [GrowthEvent(**event) for event in state["events"]]
        for name, rank in ranks.items():
            layer = self.layers[name]
            layer.set_rank(int(rank))
            layer.births = [0] * layer.capacity
            grown = layer.init_rank
            for event in events:  # rows join in order: replaying the events gives each row its step
                amount = event.grown.get(name, 0)
                layer.births[grown:grown + amount] = [event.step] * amount
                grown += amount
        self.step_count = self.observed_step = int(state["step"])
        self.scorer.load_state_dict(state["scorer"])
        self.events = events
