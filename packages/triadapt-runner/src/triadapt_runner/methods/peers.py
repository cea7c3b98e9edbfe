"""The paper's peers as rows of a grid: peft LoRA, peft AdaLoRA and full fine-tuning.

They adapt the same layers as TriAdaptLoRA (the run's ``adapter.target_modules``, default the
architecture's set), train the same heads, and match its budget: LoRA at r = r_ref on every
matrix; AdaLoRA pruning from ``init_r`` to ``target_r`` = r_ref, so that its final total rank is
TriAdaptLoRA's R0 = r_ref · M. They run in one process (no DDP or DeepSpeed: a multi-process
launch is refused before training). LoRA and AdaLoRA are presets of ``approach: peft``
(`triadapt_runner.methods.peft_tuners`): their peft config is built and checked the same way
(`peft_config.build`), from the adapter section instead of a ``peft:`` section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from triadapt.errors import TargetError
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.methods.base import Adapted, Method, MethodPlan, RankRecord
from triadapt_runner.methods.peft_config import build as build_peft_config


def _targets(model: torch.nn.Module, cfg: Any) -> tuple[list[str], list[str]]:
    """(adapted layer names, heads) exactly as TriAdaptLoRA would choose them."""
    from triadapt.targets import find_heads, find_targets

    try:
        heads = find_heads(model, cfg.adapter.get("trainable_modules"))
        return find_targets(model, cfg.adapter.get("target_modules"), exclude=heads), heads
    except TargetError as exc:
        raise RunnerError(f"adapter.{exc}") from None


def _needs_peft(approach: str) -> None:
    import importlib.util

    if importlib.util.find_spec("peft") is None:  # found, not imported: importing peft takes seconds
        raise RunnerError(f"approach={approach!r} needs peft: pip install 'peft==0.21.2'")


class PeftLora(Method):
    """peft's LoRA at rank r = r_ref (``adapter.ref_rank``) on every targeted matrix, for the whole run."""

    name = "peft-lora"

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        _needs_peft(self.name)
        names, _ = _targets(model, cfg)
        rank = cfg.adapter_config(None).ref_rank
        return MethodPlan(f"peft LoRA r={rank} on every matrix, no growth", len(names))

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        from peft import get_peft_model

        names, heads = _targets(model, cfg)
        a = cfg.adapter_config(None)
        fields = {"r": a.ref_rank, "lora_alpha": a.lora_alpha, "lora_dropout": a.dropout, "target_modules": names,
                  "modules_to_save": heads or None}
        config = build_peft_config("LORA", fields, prefix="adapter")  # from the checked adapter section
        return PeftAdapted(get_peft_model(model, config), {name: a.ref_rank for name in names}, a.ref_rank)

    def label(self, cfg: Any) -> str:
        return "peft LoRA"


class PeftAdaLora(Method):
    """peft's AdaLoRA: ``init_r`` per matrix pruned to ``target_r`` = r_ref by sensitivity, its budget R0.

    ``update_and_allocate`` runs after every optimizer step (never per micro-batch) with
    ``total_step`` = T. Its schedule follows AdaLoRA's GLUE recipe scaled to T: tinit ≈ 0.12·T
    (allocation starts), tfinal ≈ 0.5·T (the last half trains the final pattern), ΔT = T/500;
    init_r = 1.5 · r_ref, β1 = β2 = 0.85, and the orthogonal regulariser with the run's λ.
    """

    name = "peft-adalora"
    options = {"init_r": None, "tinit": None, "tfinal": None, "deltaT": None, "beta1": 0.85, "beta2": 0.85}

    def validate(self, cfg: Any) -> None:
        """The options' types, when the config is built (their ranges need T: `settings`)."""
        super().validate(cfg)
        for key, value in cfg.approach_options.items():
            if key in ("beta1", "beta2"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                    raise invalid(f"approach_options.{key}", value, "must be a number in (0, 1)")
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise invalid(f"approach_options.{key}", value, "must be a non-negative integer (or null for the "
                                                                "default scaled to T)")

    def settings(self, cfg: Any, total_steps: int) -> dict[str, Any]:
        a = cfg.adapter_config(None)
        given = cfg.approach_options
        if a.total_budget is not None:
            raise RunnerError(f"adapter.total_budget={a.total_budget!r} is invalid with approach 'peft-adalora': "
                              f"AdaLoRA's budget is a rank per matrix, target_r = adapter.ref_rank; set ref_rank")
        settings = {
            "init_r": given.get("init_r") or -(-3 * a.ref_rank // 2), "target_r": a.ref_rank,
            "tinit": given.get("tinit", round(0.12 * total_steps)),
            "tfinal": given.get("tfinal", round(0.5 * total_steps)),
            "deltaT": given.get("deltaT") or max(1, round(total_steps / 500)),
            "beta1": given.get("beta1", 0.85), "beta2": given.get("beta2", 0.85), "total_step": total_steps,
            "orth_reg_weight": a.orth_reg_weight, "lora_alpha": a.lora_alpha, "lora_dropout": a.dropout,
        }
        if settings["init_r"] < settings["target_r"]:
            raise RunnerError(f"approach_options.init_r={settings['init_r']!r} is invalid: AdaLoRA prunes from init_r "
                              f"to target_r = adapter.ref_rank = {a.ref_rank}, so init_r must be >= {a.ref_rank}")
        last = total_steps - settings["tfinal"]  # AdaLoRA fixes its rank pattern at this step
        if not (0 <= settings["tinit"] < last and last >= 2):  # and scores at least one step before it
            raise RunnerError(f"approach_options.tinit={settings['tinit']!r} is invalid: AdaLoRA allocates between "
                              f"tinit and T - tfinal = {total_steps} - {settings['tfinal']} = {last}, scoring at least "
                              f"one step before; use a smaller tinit or tfinal, or a longer run")
        return settings

    def allocates_ranks(self, cfg: Any) -> bool:
        return True

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        _needs_peft(self.name)
        names, _ = _targets(model, cfg)
        s = self.settings(cfg, total_steps)
        return MethodPlan(f"peft AdaLoRA r {s['init_r']} → {s['target_r']} per matrix (budget {s['target_r'] * len(names)}"
                          f"), allocation from t={s['tinit']} to t={total_steps - s['tfinal']} every {s['deltaT']} "
                          f"steps", len(names))

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        from peft import get_peft_model

        names, heads = _targets(model, cfg)
        s = self.settings(cfg, total_steps)
        config = build_peft_config("ADALORA", {"target_modules": names, "modules_to_save": heads or None, **s},
                                   given=list(cfg.approach_options), prefix="approach_options")
        return AdaLoraAdapted(get_peft_model(model, config), names, s)

    def label(self, cfg: Any) -> str:
        return "peft AdaLoRA"


class FullFineTune(Method):
    """Every weight trained; no adapter, no ranks."""

    name = "full-finetune"
    trains_quantized_base = False

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        return MethodPlan("full fine-tuning: every weight trained", 0)

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        for param in model.parameters():
            param.requires_grad_(True)
        return FullAdapted(model)

    def label(self, cfg: Any) -> str:
        return "full fine-tuning"


class FullAdapted(Adapted):
    def __init__(self, model: torch.nn.Module):
        self.model = model

    def rank_record(self) -> None:
        return None

    def save(self, path: Path, accelerator: Any) -> bool:
        return False  # the whole model: never uploaded as a run artifact


class PeftAdapted(Adapted):
    def __init__(self, model: Any, ranks: dict[str, int], ref_rank: int):
        self.model, self._ranks, self.ref_rank = model, ranks, ref_rank

    def ranks(self) -> dict[str, int]:
        return dict(self._ranks)

    def rank_record(self) -> RankRecord:
        return RankRecord(self.ranks(), sum(self._ranks.values()) / (self.ref_rank * len(self._ranks)))

    def save(self, path: Path, accelerator: Any) -> bool:
        if accelerator.is_main_process:
            accelerator.unwrap_model(self.model).save_pretrained(str(path))
        accelerator.wait_for_everyone()
        return True


class AdaLoraAdapted(PeftAdapted):
    """Ranks from AdaLoRA's budget while it allocates, and from its rank pattern once set."""

    def __init__(self, model: Any, names: list[str], settings: dict[str, Any]):
        super().__init__(model, {name: settings["init_r"] for name in names}, settings["target_r"])
        self.settings, self.area, self.steps = settings, 0.0, 0

    def after_optimizer_step(self, step: int, optimizer: Any) -> None:
        self.model.base_model.update_and_allocate(step)  # between optimizer.step() and zero_grad(), per peft
        pattern = self.model.peft_config["default"].rank_pattern
        if pattern:
            self._ranks = {name: int(sum(pattern[key])) for name, key in self._pattern_keys(pattern).items()}
        total = sum(self._ranks.values()) if pattern else self._budget(step)
        self.area += total
        self.steps = step

    def _budget(self, step: int) -> int:
        budget, _ = self.model.base_model.rankallocator.budget_schedule(step)
        return int(budget)

    def _pattern_keys(self, pattern: dict[str, Any]) -> dict[str, str]:
        """Our layer name -> the rank-pattern key peft uses for it (``[prefix.]<layer>.lora_E.<adapter>``)."""
        out = {}
        layer_of = {key: key.split(".lora_E")[0] for key in pattern}
        for name in self._ranks:
            matches = [key for key, layer in layer_of.items() if layer == name or layer.endswith("." + name)]
            if len(matches) != 1:
                raise RunnerError(f"AdaLoRA's rank pattern has {len(matches)} entries for layer {name!r}")
            out[name] = matches[0]
        return out

    def step_metrics(self) -> dict[str, float]:
        return {"total_rank": float(sum(self._ranks.values()))}

    def rank_record(self) -> RankRecord:
        use = self.area / (self.steps * self.ref_rank * len(self._ranks)) if self.steps else 0.0
        return RankRecord(self.ranks(), use)

    STATS = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # AdaLoRA's sensitivity statistics (RankAllocator)

    def state_dict(self) -> dict[str, Any]:
        """For exact resume: the rank bookkeeping, AdaLoRA's rank pattern and its sensitivity statistics."""
        allocator = self.model.base_model.rankallocator
        return {"area": self.area, "steps": self.steps, "ranks": dict(self._ranks),
                "rank_pattern": self.model.peft_config["default"].rank_pattern,
                **{key: {k: v.clone() for k, v in getattr(allocator, key).items()} for key in self.STATS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.area, self.steps, self._ranks = float(state["area"]), int(state["steps"]), dict(state["ranks"])
        self.model.peft_config["default"].rank_pattern = state["rank_pattern"]
        allocator = self.model.base_model.rankallocator
        for key in self.STATS:
            setattr(allocator, key, {k: v.clone() for k, v in state[key].items()})
