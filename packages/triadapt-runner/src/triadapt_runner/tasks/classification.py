"""Sequence classification and regression (single texts or pairs): GLUE, the built-in data, user files."""

from __future__ import annotations

from typing import Any

import torch

from triadapt_runner.tasks import metrics as task_metrics
from triadapt_runner.tasks.specs import TaskSpec
from triadapt_runner.tasks.base import Evaluation, Loaders, TaskKind


class SequenceClassification(TaskKind):
    name = "classification"
    auto_model = "AutoModelForSequenceClassification"

    def model_kwargs(self, task: TaskSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_labels": task.num_labels}
        if task.is_regression:
            kwargs["problem_type"] = "regression"
        return kwargs

    def build_loaders(self, cfg: Any, task: TaskSpec, splits: Any, tokenizer: Any) -> Loaders:
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

    @torch.no_grad()
    def evaluate(self, model: Any, loaders: Loaders, cfg: Any, task: TaskSpec, accelerator: Any) -> Evaluation:
        """Metrics, and the logits of every validation example in dataset order (``eval_logits.json``)."""
        model.eval()
        predictions, labels, all_logits = [], [], []
        for batch in loaders.evaluation:
            logits, gold = accelerator.gather_for_metrics((model(**batch).logits, batch["labels"]))
            preds = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
            predictions.extend(preds.float().cpu().tolist() if task.is_regression else preds.cpu().tolist())
            labels.extend(gold.cpu().tolist())
            all_logits.extend(logits.float().cpu().tolist())
        scores = task_metrics.compute(task.metrics, predictions, labels)
        return Evaluation(scores, {"eval_logits.json": all_logits})
