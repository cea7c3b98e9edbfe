"""Task kinds: how one kind of task builds its model and data loaders and is evaluated.

Each kind is one module behind the `TaskKind` interface (`base.py`); the training loop and
the preflight call that interface and never ask which kind they hold.
"""

from __future__ import annotations

from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind


def kind_for(task: TaskSpec) -> TaskKind:
    """The kind that trains ``task`` (its ``kind`` field: single, pair, regression, qa, sft, lm)."""
    if task.kind == "qa":
        from triadapt_runner.tasks.extractive_qa import ExtractiveQA

        return ExtractiveQA()
    if task.is_causal_lm:
        from triadapt_runner.tasks.causal_lm import CausalLM

        return CausalLM()
    from triadapt_runner.tasks.classification import SequenceClassification

    return SequenceClassification()


__all__ = ["Evaluation", "Loaders", "TaskKind", "kind_for"]
