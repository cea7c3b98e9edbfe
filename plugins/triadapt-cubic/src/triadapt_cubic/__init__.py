"""``cubic`` threshold: the total rank follows AdaLoRA's cubic schedule, upwards."""

import math
from dataclasses import dataclass

from triadapt import ThresholdSpec, hookimpl
from triadapt.thresholds import GrowthContext, Threshold


def check_final_steps(final_steps: int) -> None:
    if isinstance(final_steps, bool) or not isinstance(final_steps, int) or final_steps < 0:
        raise ValueError(f"strategy_options.cubic.final_steps={final_steps!r} is invalid: an integer >= 0")


@dataclass(frozen=True)
class CubicOptions:
    """``strategy_options: {cubic: {final_steps: ...}}``."""

    final_steps: int = 0  # t_f: the whole budget is reached this many steps before the end (AdaLoRA's final phase)

    def __post_init__(self) -> None:
        check_final_steps(self.final_steps)


class CubicThreshold(Threshold):
    name = "cubic"
    needs_total_steps = True

    def __init__(self, final_steps: int = 0):
        check_final_steps(final_steps)
        self.final_steps = final_steps

    def target(self, ctx: GrowthContext) -> float:
        span = ctx.total_steps - ctx.warmup_steps - self.final_steps
        a = 1.0 if span <= 0 else min(1.0, (ctx.step - ctx.warmup_steps) / span)
        return ctx.initial_budget - (ctx.initial_budget - ctx.initial_total_rank) * (1.0 - a) ** 3

    def count(self, ctx: GrowthContext) -> int:
        current = ctx.initial_budget - ctx.remaining_budget
        missing = self.target(ctx) - current
        return max(0, math.ceil(missing / ctx.rank_increment - 1e-9))


def _build(config, options: CubicOptions) -> CubicThreshold:
    return CubicThreshold(options.final_steps)


@hookimpl
def triadapt_thresholds():
    return [ThresholdSpec("cubic", _build, "total rank follows AdaLoRA's cubic schedule, growing to the budget",
                          CubicOptions)]
