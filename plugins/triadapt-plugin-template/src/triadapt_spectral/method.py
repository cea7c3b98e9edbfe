"""Example method plugin: ``linear-probe``, the task head trained on a frozen model (no adapter at all).

The classic baseline of parameter-efficient fine-tuning papers: how much of a task the frozen
representation already solves. Registered through the runner's ``triadapt_methods`` hook (entry-point
group ``triadapt.methods``); needs ``triadapt-runner`` (``pip install 'triadapt-spectral[runner]'``).
Option ``train_norms`` also trains the LayerNorm weights and biases (a few thousand parameters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from triadapt import hookimpl
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.methods.base import Adapted, Method, MethodPlan


class LinearProbe(Method):
    name = "linear-probe"
    options = {"train_norms": False}

    def validate(self, cfg: Any) -> None:
        value = cfg.approach_options.get("train_norms", False)
        if not isinstance(value, bool):
            raise invalid("approach_options.train_norms", value, "use true or false")

    def _trained(self, model: torch.nn.Module, cfg: Any) -> list[str]:
        """Names of the parameters this method trains: the heads', and the norms' with ``train_norms``."""
        from triadapt.errors import TargetError
        from triadapt.targets import find_heads

        try:
            heads = find_heads(model, cfg.adapter.get("trainable_modules"))
        except TargetError as exc:
            raise RunnerError(f"adapter.{exc}") from None
        if not heads:
            raise RunnerError(f"approach='linear-probe' is invalid for model={cfg.model!r}: it has no task head to train")
        norms = cfg.approach_options.get("train_norms", False)
        return [name for name, _ in model.named_parameters()
                if any(name.startswith(h + ".") for h in heads) or (norms and "LayerNorm" in name)]

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        trained = self._trained(model, cfg)
        return MethodPlan(f"linear probe: {len(trained)} head tensors trained, the model frozen", 0)

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        trained = set(self._trained(model, cfg))
        for name, param in model.named_parameters():
            param.requires_grad_(name in trained)
        return ProbeAdapted(model)

    def label(self, cfg: Any) -> str:
        return "linear probe" + (" + norms" if cfg.approach_options.get("train_norms") else "")


class ProbeAdapted(Adapted):
    def __init__(self, model: torch.nn.Module):
        self.model = model

    def rank_record(self) -> None:
        return None  # no ranks

    def save(self, path: Path, accelerator: Any) -> bool:
        """The trained tensors only, as ``probe.safetensors`` (load them into the base model non-strictly)."""
        from safetensors.torch import save_file

        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            path.mkdir(parents=True, exist_ok=True)
            save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                      str(path / "probe.safetensors"))
        accelerator.wait_for_everyone()
        return True


@hookimpl
def triadapt_methods():
    return [LinearProbe()]
