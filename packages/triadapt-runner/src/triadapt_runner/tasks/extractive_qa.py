"""Extractive question answering (SQuAD 1.1 / 2.0) over sliding-window features."""

from __future__ import annotations

from typing import Any, Callable

from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind


class ExtractiveQA(TaskKind):
    name = "extractive_qa"
    auto_model = "AutoModelForQuestionAnswering"
    quantizable = False  # the QA head and its windows are not tested on 4/8-bit bases

    def count_train_items(self, cfg: Any, task: TaskSpec, rows: dict[str, list[dict]],
                          tokenizer: Callable[[], Any]) -> int:
        """Windows, not questions: a long context makes several training features."""
        from triadapt_runner.tasks.qa.features import train_features
        from triadapt_runner.tasks.qa.pipeline import settings_for

        train = rows["train"]
        columns = {key: [row[key] for row in train] for key in ("id", "question", "context", "answers")}
        return len(train_features(columns, tokenizer(), settings_for(cfg, task))["input_ids"])

    def build_loaders(self, cfg: Any, task: TaskSpec, splits: Any, tokenizer: Any) -> Loaders:
        from triadapt_runner.tasks.qa import pipeline

        train, evaluation, reference = pipeline.qa_loaders(cfg, task, splits, tokenizer)
        return Loaders(train, evaluation, reference)

    def evaluate(self, model: Any, loaders: Loaders, cfg: Any, task: TaskSpec, accelerator: Any) -> Evaluation:
        from triadapt_runner.tasks.qa import pipeline

        scores = pipeline.qa_evaluate(model, loaders.evaluation, loaders.reference, pipeline.settings_for(cfg, task),
                                      accelerator)
        return Evaluation(scores)
