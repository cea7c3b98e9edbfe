"""The `Method` interface: how a run adapts its model (TriAdaptLoRA, peft LoRA / AdaLoRA, full fine-tuning).

A method checks itself on the model's structure before anything starts (`plan`, which must not
change the model and works on a meta-device model) and then attaches to the real model
(`attach`), returning an `Adapted` handle that the training loop drives without asking which
method it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class MethodPlan:
    """What a method will do on a model, checked."""

    summary: str  # one line: the schedule, or the fixed setup
    num_matrices: int
    warning: str | None = None
    schedule: Any = None  # a triadapt.Schedule for growing methods


@dataclass
class RankRecord:
    """What the run reports about its ranks at the end."""

    ranks: dict[str, int]  # final rank per adapted matrix
    rank_use: float  # ∫ Σ r dt / (T · R0)
    capacity_hits: int = 0  # matrices that reached their capacity
    capacity_first_step: int | None = None  # the optimizer step at which the first one did
    events: list[dict[str, Any]] = field(default_factory=list)


class Adapted(ABC):
    """A model under one method, as the training loop drives it."""

    model: torch.nn.Module  # the module to train (a peft model wraps the original)

    def extra_loss(self) -> torch.Tensor | float:
        """A regulariser to add to the task loss (0 if none)."""
        return 0.0

    def before_optimizer_step(self) -> None:
        """Gradients are complete (on every process); nothing has stepped yet."""

    def after_optimizer_step(self, step: int, optimizer: Any) -> Any:
        """The optimizer has stepped; gradients are still there. Returns a growth event, if any."""
        return None

    def step_metrics(self) -> dict[str, float]:
        """Metrics logged with the loss (e.g. total rank, budget left)."""
        return {}

    def ranks(self) -> dict[str, int] | None:
        """Current rank per adapted matrix (None for methods without ranks)."""
        return None

    def trained_parameters(self) -> int:
        """Parameters trained by the end of the run (TriAdaptLoRA: the active units and heads, not the reserve)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def persistent_params(self) -> list[torch.nn.Parameter]:
        """Parameters DeepSpeed ZeRO-3 must keep whole on every process (the allocator reads them)."""
        return []

    def follow_deepspeed(self, optimizer: Any) -> None:
        """Under DeepSpeed, once the engine exists: ``optimizer`` is the engine's (it steps fp32 copies of the
        trainable parameters). Methods that act on the optimizer state follow those copies; others ignore it."""

    @property
    def checkpoint_interval(self) -> int | None:
        """Default steps between checkpoints (TriAdaptLoRA: the growth interval, so checkpoints sit at events)."""
        return None

    @abstractmethod
    def rank_record(self) -> RankRecord | None:
        """Ranks, rank use and capacity hits at the end of the run (None without ranks)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but got keys {sorted(state)}")

    @abstractmethod
    def save(self, path: Path, accelerator: Any) -> bool:
        """Save what the run trained (adapter only, never the base weights); False if nothing is saved."""


class Method(ABC):
    """One way of adapting a model. Stateless: one instance serves every run."""

    name: str = ""
    options: dict[str, Any] = {}  # approach_options this method accepts, with their defaults
    distributed: bool = False  # supports multi-process and DeepSpeed runs
    trains_quantized_base: bool = True  # trains on a 4/8-bit base (model.quantization): adapters do, full FT does not

    def validate(self, cfg: Any) -> None:
        """Check the run config's sections this method reads (at construction: before T and the model are known)."""
        cfg.adapter_config(None)

    @abstractmethod
    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        """Check the method on ``model`` (its structure may be on the meta device); never change it."""

    @abstractmethod
    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        """Adapt ``model`` for training."""

    def label(self, cfg: Any) -> str:
        return self.name

    def allocates_ranks(self, cfg: Any) -> bool:
        """Whether a run's ranks change during training (its final ranks then get a panel in the grid's figure)."""
        return False

    def strategy_tags(self, cfg: Any) -> dict[str, str]:
        """The strategy names a run of this method uses (MLflow tags ``triadapt.structure`` and the like)."""
        return {}
