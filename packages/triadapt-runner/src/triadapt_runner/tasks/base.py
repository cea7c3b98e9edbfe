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
    """One kind of task. Stateless: one instance serves every run of that kind.

    Besides training and scoring, a kind answers every question that depends on it (which
    metrics it reports and in which direction each is better, how its user files are read,
    which data options it takes, how `compare` shows its scores), so that the rest of the
    runner asks the kind instead of testing its name (one object per kind string,
    `triadapt_runner.tasks.registry`).
    """

    name: str = ""  # the model family (classification, causal_lm, extractive_qa): messages and cache keys
    key: str = ""  # the kind string of TaskSpec.kind and data.kind (single, pair, regression, qa, sft, lm)
    auto_model: str = ""  # the transformers Auto class of this kind's model
    quantizable: bool = True  # its model may be loaded in 4 or 8 bits (model.quantization)
    metrics: tuple[str, ...] = ()  # every metric custom data of this kind may report
    main_metric: str = ""  # the main metric of custom data of this kind
    extra_metrics: tuple[str, ...] = ()  # reported besides the task's declared metrics (QA: per answerability)
    minimised: tuple[str, ...] = ()  # metrics where lower is better; every other metric is maximised
    custom: bool = True  # user files may be of this kind (data.task=custom, data.kind=<key>)
    pairs: bool = False  # its rows may hold a second text (text_pair)
    packing: bool = False  # takes data.packing
    both_files: bool = False  # a built-in task of this kind reads data.train_file and data.validation_file together
    windows: bool = False  # long inputs are cut into overlapping windows (data.doc_stride)
    raw_scores: bool = False  # `compare` shows its scores as they are, not fractions in per cent
    decimals: int = 2  # decimals `compare` shows
    label_type: str = "an integer class id"  # what a label of its user files must be (in errors)

    @property
    def label(self) -> str:
        """How `triadapt data list` names this kind."""
        return self.key

    def lower_is_better(self, metric: str) -> bool:
        """Whether ``metric`` (a metric name, not ``main``) is minimised."""
        return metric in self.minimised

    def better(self, metric: str, a: float, b: float) -> bool:
        """Whether value ``a`` of ``metric`` beats ``b``."""
        return a < b if self.lower_is_better(metric) else a > b

    def reported_metrics(self, task: TaskSpec) -> tuple[str, ...]:
        """The metrics a run of ``task`` reports (``result_<metric>`` in MLflow)."""
        return tuple(dict.fromkeys(task.metrics + self.extra_metrics))

    def custom_task(self, data: Any, rows: dict[str, list[dict]]) -> TaskSpec:
        """The task of user files of this kind (``rows``: their canonical rows); metrics follow the kind."""
        raise NotImplementedError(f"task kind {self.key!r} does not read custom data")

    def file_columns(self, data: Any) -> dict[str, str]:
        """Canonical row key -> column of a user file, from the column mapping of ``data`` (a `DataConfig`)."""
        return {"text": data.text_column, "label": data.label_column}

    def parse_label(self, raw: Any, label_names: tuple[str, ...] = ()) -> int | float:
        """A label as training reads it (ValueError/TypeError if it is not one)."""
        return int(raw)

    def from_labelled(self, rows: list[dict]) -> list[dict]:
        """Rows of a built-in labelled dataset (text, label) in this kind's row layout."""
        return rows

    def read_splits(self, task: TaskSpec, data: Any) -> dict[str, list[dict]] | None:
        """Built-in ``task``'s splits when this kind reads them its own way; None: the common sources
        (built-in files, a GLUE folder, the hub)."""
        return None

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

        raise RunnerError(f"model={path!r} is invalid under ZeRO-3: deepspeed.zero.Init cannot build its class "
                          f"partitioned; set train.zero3_init=false to build it whole on each process "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
