"""The `TaskKind` interface: model, loaders, the number of training items, evaluation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from triadapt_runner.tasks.specs import TaskSpec


@dataclass
class Loaders:
    train: Any  # a torch DataLoader over training items (rows, or QA windows)
    evaluation: Any  # a torch DataLoader over validation items, in dataset order
    reference: Any = None  # what evaluation needs besides the model's outputs (QA: examples and features)


@dataclass
class Evaluation:
    scores: dict[str, float]  # the task's metrics on the validation split
    artifacts: dict[str, Any] = field(default_factory=dict)  # JSON files of the final evaluation, by file name
    per_epoch: dict[str, Any] = field(default_factory=dict)  # JSON files kept for every evaluation (name-epochN.json)


class TaskKind(ABC):
    """One kind of task. Stateless: one instance serves every run of that kind."""

    name: str = ""
    auto_model: str = ""  # the transformers Auto class of this kind's model
    quantizable: bool = True  # its model may be loaded in 4 or 8 bits (model.quantization)

    def check(self, cfg: Any, task: TaskSpec, model: Any) -> None:
        """Refuse a run config this kind cannot train on ``model`` (its structure; may be on the meta device)."""

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        """Config overrides of this task's model (e.g. the number of labels)."""
        return {}

    def build_model(self, path: str, task: TaskSpec, *, meta: bool = False, load: dict[str, Any] | None = None) -> Any:
        """The pretrained model at ``path`` with this kind's head; with ``meta``, its structure only (no weights).

        ``load``: further ``from_pretrained`` arguments (a quantisation config, `triadapt_runner.quantization`).
        """
        import torch
        import transformers

        auto = getattr(transformers, self.auto_model)
        if not meta:
            return _pretrained(auto, path, {**self.model_kwargs(task), **(load or {})})
        config = transformers.AutoConfig.from_pretrained(path, **self.model_kwargs(task))
        with torch.device("meta"):
            return auto.from_config(config)

    def count_train_items(self, cfg: Any, task: TaskSpec, rows: dict[str, list[dict]],
                          tokenizer: Callable[[], Any]) -> int:
        """Training items one epoch iterates over (``tokenizer()`` loads the tokenizer if a kind needs it)."""
        return len(rows["train"])

    @abstractmethod
    def build_loaders(self, cfg: Any, task: TaskSpec, splits: Any, tokenizer: Any) -> Loaders:
        """Training and validation loaders (training shuffled by a generator seeded with the run's seed)."""

    @abstractmethod
    def evaluate(self, model: Any, loaders: Loaders, cfg: Any, task: TaskSpec, accelerator: Any) -> Evaluation:
        """Validation metrics of ``model``, gathered over processes."""


def _pretrained(auto: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """``from_pretrained``; under ZeRO-3 (unless ``train.zero3_init`` is false) transformers builds it partitioned."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return auto.from_pretrained(path, **kwargs)
    try:
        return auto.from_pretrained(path, **kwargs)
    except Exception as exc:
        from triadapt_runner.errors import RunnerError

        raise RunnerError(f"model={path!r} is invalid under ZeRO-3: its class cannot be built partitioned by "
                          f"deepspeed.zero.Init ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); set "
                          f"train.zero3_init=false to build it whole on each process") from None
