"""TriAdaptLoRA (the `triadapt` approach) and the IncreLoRA-style preset built from its parts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from triadapt.errors import ConfigError, TargetError, UnknownStrategyError
from triadapt_runner.errors import RunnerError
from triadapt_runner.methods.base import Adapted, Method, MethodPlan, RankRecord


class TriAdapt(Method):
    """ΔW = B(L+U)A adapters growing by the allocator (or any structure, scorer and threshold by name)."""

    name = "triadapt"
    distributed = True

    def fields(self, cfg: Any) -> dict[str, Any]:
        """The adapter section this method trains with (a preset may fill or fix some of its fields)."""
        return dict(cfg.adapter)

    def validate(self, cfg: Any) -> None:
        cfg.adapter_config(None, self.fields(cfg))

    def config(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Any:
        return cfg.adapter_config(total_steps, self.fields(cfg))

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        from triadapt import plan_injection

        try:
            plan = plan_injection(model, self.config(model, cfg, total_steps))
        except (ConfigError, TargetError, UnknownStrategyError) as exc:
            raise RunnerError(f"adapter.{exc}") from None
        schedule = plan.schedule
        return MethodPlan(schedule.summary(), plan.num_matrices, schedule.warning(), schedule)

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        from triadapt import inject

        return TriAdaptAdapted(inject(model, self.config(model, cfg, total_steps)))

    def label(self, cfg: Any) -> str:
        from triadapt import TriAdaptConfig

        a = {**TriAdaptConfig().to_dict(), **cfg.adapter}
        return f"{a['structure']}/{a['scorer']}/{a['threshold']}"

    def allocates_ranks(self, cfg: Any) -> bool:
        return cfg.adapter_config(None, self.fields(cfg)).threshold_grows

    def strategy_tags(self, cfg: Any) -> dict[str, str]:
        a = cfg.adapter_config(None, self.fields(cfg))
        return {"structure": a.structure, "scorer": a.scorer, "threshold": a.threshold}


class IncreLoRAStyle(TriAdapt):
    """An approximation of IncreLoRA (Zhang et al. 2023) from this project's parts; see docs/runner.md (Methods).

    ``lora`` structure (ΔW = BA) from rank 1, the ``sensitivity`` scorer (AdaLoRA's smoothed
    sensitivity × uncertainty, β1 = β2 = 0.85, averaged per matrix as IncreLoRA's module score),
    threshold ``fixed``: the top-k matrices grow by Δr at every event, with t0 = ΔT as IncreLoRA's
    ``init_warmup`` = ``incre_interval``. k (IncreLoRA's ``top_h``) defaults to the k that spends the
    budget by the last event: ⌈(R0 − M·r_init) / events⌉.
    """

    name = "increlora-style"
    PRESET = {"structure": "lora", "scorer": "sensitivity", "threshold": "fixed", "core_init": "gaussian"}

    def fields(self, cfg: Any) -> dict[str, Any]:
        """The adapter section with the preset applied (a value set by hand must agree with it)."""
        for key, value in self.PRESET.items():
            if cfg.adapter.get(key) not in (None, value):
                raise RunnerError(f"adapter.{key}={cfg.adapter[key]!r} is invalid with approach 'increlora-style', "
                                  f"which sets it to {value!r}; use approach 'triadapt' to choose it")
        fields = {**{k: v for k, v in cfg.adapter.items() if v is not None}, **self.PRESET}
        fields.setdefault("fixed_k", 1)  # until the plan knows M and the events
        return fields

    def config(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Any:
        from triadapt.planning import plan_injection
        from triadapt.schedule import event_steps

        config = super().config(model, cfg, total_steps)
        if cfg.adapter.get("fixed_k") is not None:
            return config
        try:
            matrices = plan_injection(model, config).num_matrices
        except UnknownStrategyError:
            raise RunnerError("approach 'increlora-style' needs the scorer 'sensitivity' of the plugin "
                              "triadapt-sensitivity: pip install -e plugins/triadapt-sensitivity") from None
        except (ConfigError, TargetError) as exc:
            raise RunnerError(f"adapter.{exc}") from None
        events = len(event_steps(config.warmup_steps, config.growth_interval, total_steps))
        remaining = config.budget(matrices) - config.init_rank * matrices
        k = max(1, math.ceil(remaining / max(1, events * config.rank_increment)))
        return config.replace(fixed_k=min(k, matrices))

    def label(self, cfg: Any) -> str:
        return "IncreLoRA-style"


class TriAdaptAdapted(Adapted):
    def __init__(self, controller: Any):
        self.ctl = controller
        self.model = controller.model

    def extra_loss(self) -> torch.Tensor:
        return self.ctl.orthogonal_loss()

    def before_optimizer_step(self) -> None:
        self.ctl.observe_gradients()

    def after_optimizer_step(self, step: int, optimizer: Any) -> Any:
        return self.ctl.step(optimizer)  # also restores fresh-unit semantics in the optimizer (triadapt.fresh_units)

    def step_metrics(self) -> dict[str, float]:
        allocator = self.ctl.allocator
        return {"total_rank": float(allocator.total_rank()), "budget_left": float(allocator.remaining_budget())}

    def ranks(self) -> dict[str, int]:
        return self.ctl.ranks

    def persistent_params(self) -> list[torch.nn.Parameter]:
        return [layer.units for layer in self.ctl.layers.values()]

    def trained_parameters(self) -> int:
        counts = self.ctl.parameter_counts()
        return counts["active_adapter"] + counts["heads"]

    def follow_deepspeed(self, optimizer: Any) -> None:
        from triadapt.zero_shares import follow_deepspeed

        follow_deepspeed(self.ctl, optimizer)

    @property
    def checkpoint_interval(self) -> int:
        return self.ctl.config.growth_interval

    def rank_record(self) -> RankRecord:
        from triadapt.schedule import rank_use

        ctl, allocator = self.ctl, self.ctl.allocator
        events = [event.to_dict() for event in ctl.events]
        ranks = {name: ctl.config.init_rank for name in ctl.layers}
        first_hit = None
        for event in events:
            for name, amount in event["grown"].items():
                ranks[name] += amount
                if first_hit is None and ranks[name] >= ctl.layers[name].capacity:
                    first_hit = event["step"]
        growth = [(event["step"], sum(event["grown"].values())) for event in events]
        use = rank_use(allocator.initial_total_rank, growth, ctl.config.total_steps or 0, allocator.initial_budget)
        hits = sum(1 for name, layer in ctl.layers.items() if layer.rank >= layer.capacity)
        return RankRecord(ctl.ranks, use, hits if ctl.allocator.threshold.grows else 0,
                          first_hit if ctl.allocator.threshold.grows else None, events)

    def state_dict(self) -> dict[str, Any]:
        return self.ctl.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ctl.load_state_dict(state)

    def save(self, path: Path, accelerator: Any) -> bool:
        from triadapt_runner.methods.adapter_saving import save_adapter

        save_adapter(self.ctl, path, accelerator)
        return True
