"""Extractive question answering (SQuAD 1.1 / 2.0) over sliding-window features."""

from __future__ import annotations

from typing import Any, Callable

from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind


class ExtractiveQA(TaskKind):
    """``qa``: SQuAD-format questions over contexts; EM and F1 already in per cent."""

    name = "extractive_qa"
    key = "qa"
    auto_model = "AutoModelForQuestionAnswering"
    quantizable = False  # the QA head and its windows are not tested on 4/8-bit bases
    metrics = ("exact", "f1")
    main_metric = "f1"
    extra_metrics = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")  # by answerability, where present
    custom = False  # user files are read through a SQuAD task (data.train_file / data.validation_file)
    both_files = True
    windows = True
    raw_scores = True  # per cent already

    def read_splits(self, task: TaskSpec, data: Any) -> dict[str, list[dict]] | None:
        """SQuAD JSON files when given (both), else the task's hub dataset."""
        from triadapt_runner.tasks.data.squad import load_squad

        return load_squad(task, data)

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


QA = ExtractiveQA()
