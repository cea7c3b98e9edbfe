"""Sequence classification and regression (single texts or pairs): GLUE, the built-in data, user files.

Three kinds share this module: ``single`` (one text, class ids), ``pair`` (two texts, class
ids) and ``regression`` (two texts, a score). torch is imported where it is used, so that the
registry (read by the config and the CLI) stays light.
"""

from __future__ import annotations

from typing import Any

from triadapt_runner.errors import RunnerError
from triadapt_runner.tasks import metrics as task_metrics
from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind


class SequenceClassification(TaskKind):
    name = "classification"
    auto_model = "AutoModelForSequenceClassification"
    metrics = ("accuracy", "f1", "macro_f1")  # custom data: f1 with two classes, macro_f1 with more
    main_metric = "accuracy"

    def __init__(self, key: str, pairs: bool):
        self.key, self.pairs = key, pairs

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        return {"num_labels": task.num_labels}

    def custom_task(self, data: Any, rows: dict[str, list[dict]]) -> TaskSpec:
        labels = {row["label"] for row in rows["train"]}
        if min(labels) < 0:
            raise RunnerError(f"{data.train_file}: class ids must be >= 0, found {min(labels)}")
        num_labels = max(labels) + 1
        metrics = ("accuracy", "f1") if num_labels == 2 else ("accuracy", "macro_f1")
        return TaskSpec("custom", self.key, num_labels, metrics, self.main_metric)

    def file_columns(self, data: Any) -> dict[str, str]:
        wanted = {"text": data.text_column, "label": data.label_column}
        if self.pairs and data.text_pair_column:
            wanted["text_pair"] = data.text_pair_column
        return wanted

    def parse_label(self, raw: Any, label_names: tuple[str, ...] = ()) -> int | float:
        if label_names:
            if raw not in label_names:
                raise ValueError(f"label {raw!r} is not one of {', '.join(label_names)}")
            return label_names.index(raw)
        return int(raw)

    def predictions(self, logits: Any) -> list:
        """What the logits predict: class ids."""
        return logits.argmax(-1).cpu().tolist()

    def build_loaders(self, cfg: Any, task: TaskSpec, splits: Any, tokenizer: Any) -> Loaders:
        import torch
        from transformers import DataCollatorWithPadding

        def encode(rows: dict[str, list]) -> dict[str, list]:
            return tokenizer(rows["text"], rows.get("text_pair"), truncation=True, max_length=cfg.data.max_length)

        collate = DataCollatorWithPadding(tokenizer)
        loaders = []
        for name, shuffle, batch_size in (("train", True, cfg.train.batch_size),
                                          ("validation", False, cfg.train.eval_batch_size)):
            split = splits[name]
            encoded = split.map(encode, batched=True, remove_columns=[c for c in split.column_names if c != "label"])
            encoded = encoded.rename_column("label", "labels")
            generator = torch.Generator().manual_seed(cfg.train.seed)
            loaders.append(torch.utils.data.DataLoader(encoded, batch_size=batch_size, shuffle=shuffle,
                                                       collate_fn=collate, generator=generator))
        return Loaders(loaders[0], loaders[1])

    def evaluate(self, model: Any, loaders: Loaders, cfg: Any, task: TaskSpec, accelerator: Any) -> Evaluation:
        """Metrics, and the logits of every validation example in dataset order (``eval_logits.json``)."""
        import torch

        model.eval()
        predictions, labels, all_logits = [], [], []
        with torch.no_grad():
            for batch in loaders.evaluation:
                logits, gold = accelerator.gather_for_metrics((model(**batch).logits, batch["labels"]))
                predictions.extend(self.predictions(logits))
                labels.extend(gold.cpu().tolist())
                all_logits.extend(logits.float().cpu().tolist())
        scores = task_metrics.compute(task.metrics, predictions, labels)
        return Evaluation(scores, {"eval_logits.json": all_logits})


class Regression(SequenceClassification):
    """A score per text pair (STS-B): one output, read as the prediction; correlations as metrics."""

    metrics = ("pearson", "spearman")
    main_metric = "pearson"
    label_type = "a number"

    def __init__(self, key: str = "regression"):
        super().__init__(key, pairs=True)

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        return {"num_labels": task.num_labels, "problem_type": "regression"}

    def custom_task(self, data: Any, rows: dict[str, list[dict]]) -> TaskSpec:
        return TaskSpec("custom", self.key, 1, self.metrics, self.main_metric)

    def parse_label(self, raw: Any, label_names: tuple[str, ...] = ()) -> int | float:
        return float(raw)

    def predictions(self, logits: Any) -> list:
        return logits.squeeze(-1).float().cpu().tolist()


SINGLE = SequenceClassification("single", pairs=False)
PAIR = SequenceClassification("pair", pairs=True)
REGRESSION = Regression()
