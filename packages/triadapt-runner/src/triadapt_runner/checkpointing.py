"""Whole-training-state checkpoints, written atomically, for exact resume.

A checkpoint holds what ``accelerator.save_state`` holds (the trainable weights — every rank
unit and the heads, never the frozen base —, optimizer, LR scheduler, per-process RNG states;
under DeepSpeed the engine's own checkpoint) plus the controller's state (ranks, scorer
state, growth events, step) and the data position (epoch, batches consumed, history).

Atomicity: each checkpoint is written to ``step-N.partial`` and renamed to ``step-N`` by the
main process once every process has finished writing; a crash during a save leaves only a
``.partial`` folder, which is ignored and removed later, so the previous checkpoint stays intact.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator


STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Progress:
    """Where the loop is: optimizer step, epoch, micro-batches consumed in it, validation history."""

    step: int = 0
    epoch: int = 1
    batches_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    torch_rng: Any = None  # this process's RNG as loaded: set again once the data iterator is rebuilt

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batches_in_epoch, self.history = int(state["batches_in_epoch"]), list(state["history"])


class Checkpointer:
    def __init__(self, accelerator: Accelerator, root: str | Path, setup: Any, keep: int = 2):
        self.accelerator, self.root, self.setup, self.keep = accelerator, Path(root), setup, keep

    def latest(self) -> Path | None:
        found = sorted((int(m.group(1)), p) for p in self.root.glob("step-*") if (m := STEP_DIR.match(p.name)))
        return found[-1][1] if found else None

    def save(self, step: int) -> Path:
        acc = self.accelerator
        final, partial = self.root / f"step-{step}", self.root / f"step-{step}.partial"
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial), **self.setup.save_state_kwargs())
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            self._prune(keep_step=step)
        acc.wait_for_everyone()
        return final

    def load(self, path: Path, progress: Progress) -> None:
        self.accelerator.load_state(str(path), **self.setup.load_state_kwargs())
        # accelerate restored each process's own RNG states; building the data iterator consumes random
        # numbers, so the loop sets this process's state again afterwards
        progress.torch_rng = torch.get_rng_state()

    def _prune(self, keep_step: int) -> None:
        for stale in self.root.glob("step-*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        steps = sorted(int(m.group(1)) for p in self.root.glob("step-*") if (m := STEP_DIR.match(p.name)))
        for old in steps[: max(0, len(steps) - self.keep)]:
            if old != keep_step:
                shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)


def trainable_only(model: torch.nn.Module) -> Any:
    """A save-state pre-hook: keep only trainable weights (rank units, heads) in non-DeepSpeed checkpoints."""
    trainable = {_strip(name) for name, p in model.named_parameters() if p.requires_grad}  # DDP adds "module."

    def hook(models: list[Any], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
        for i, state in enumerate(weights):
            weights[i] = {k: v for k, v in state.items() if _strip(k) in trainable}

    return hook


def _strip(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name
