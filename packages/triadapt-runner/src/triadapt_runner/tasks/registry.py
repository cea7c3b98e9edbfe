"""Task kinds: one `TaskKind` object per kind string, in one table.

Each kind is one module behind the `TaskKind` interface (`base.py`); the training loop, the
preflight, the config, the grid's selection and `compare` ask the kind (its metrics and their
direction, its files, its options, its display) and never test its name. Adding a kind is one
module and one line of ``KINDS``. The kind modules import torch only where they train, so this
table is cheap to import.
"""

from __future__ import annotations

from typing import Any

from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind
from triadapt_runner.tasks.causal_lm import LM, SFT
from triadapt_runner.tasks.classification import PAIR, REGRESSION, SINGLE
from triadapt_runner.tasks.extractive_qa import QA
from triadapt_runner.tasks.specs import TASKS, TaskSpec

KINDS: dict[str, TaskKind] = {kind.key: kind for kind in (SINGLE, PAIR, REGRESSION, QA, SFT, LM)}
DEFAULT_KIND = SINGLE.key  # data.kind when not given (custom data of one text and class ids)


def custom_kinds() -> tuple[str, ...]:
    """The kinds user files may have (``data.kind`` with ``data.task=custom``)."""
    return tuple(key for key, kind in KINDS.items() if kind.custom)


def kind_for(task: TaskSpec) -> TaskKind:
    """The kind that trains ``task`` (its ``kind`` field: single, pair, regression, qa, sft, lm)."""
    return KINDS[task.kind]


def task_kind(task: str, data_kind: str) -> TaskKind:
    """The kind of a run of ``task``: a built-in task's own kind; for custom data, ``data_kind`` (data.kind)."""
    return kind_for(TASKS[task]) if task in TASKS else KINDS[data_kind]


def kind_of(data: Any) -> TaskKind:
    """The kind of a `DataConfig` (its data.kind must be a kind)."""
    return task_kind(data.task, data.kind)


def reported_metrics(task: str, data_kind: str) -> tuple[str, ...]:
    """The metrics a run of ``task`` reports: a built-in task's; for custom data, every metric its kind may report."""
    kind = task_kind(task, data_kind)
    return kind.reported_metrics(TASKS[task]) if task in TASKS else kind.metrics + kind.extra_metrics


def main_metric(task: str, data_kind: str) -> str:
    """The metric ``main`` stands for in a run of ``task``."""
    return TASKS[task].main_metric if task in TASKS else KINDS[data_kind].main_metric


def resolve_metric(metric: str, task: str, data_kind: str) -> str:
    """``metric`` with ``main`` replaced by the task's main metric."""
    return main_metric(task, data_kind) if metric == "main" else metric


__all__ = ["DEFAULT_KIND", "Evaluation", "KINDS", "Loaders", "TaskKind", "custom_kinds", "kind_for", "kind_of",
           "main_metric", "reported_metrics", "resolve_metric", "task_kind"]
