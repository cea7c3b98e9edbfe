"""The QA path of a run: data loaders over sliding-window features, evaluation to EM / F1."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from triadapt_runner.tasks.qa.features import QASettings, eval_features, postprocess, train_features
from triadapt_runner.tasks.qa.metrics import squad_v2_scores

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def settings_for(cfg: Any, task: Any) -> QASettings:
    stride = cfg.data.doc_stride or min(128, cfg.data.max_length // 2)
    return QASettings(max_length=cfg.data.max_length, doc_stride=stride, version_2=task.name != "squad")


def qa_loaders(cfg: Any, task: Any, splits: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    """(train loader, eval loader, (eval examples, eval features) for post-processing)."""
    settings = settings_for(cfg, task)
    collate = DataCollatorWithPadding(tokenizer)
    train = splits["train"].map(lambda b: train_features(b, tokenizer, settings), batched=True,
                                remove_columns=splits["train"].column_names)
    evaluation = splits["validation"].map(lambda b: eval_features(b, tokenizer, settings), batched=True,
                                          remove_columns=splits["validation"].column_names)
    inputs = [c for c in MODEL_INPUTS if c in evaluation.column_names]
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = torch.utils.data.DataLoader(train, batch_size=cfg.train.batch_size, shuffle=True,
                                               collate_fn=collate, generator=generator)
    eval_loader = torch.utils.data.DataLoader(evaluation.select_columns(inputs), batch_size=cfg.train.eval_batch_size,
                                              collate_fn=collate)
    return train_loader, eval_loader, (splits["validation"], evaluation)


@torch.no_grad()
def qa_evaluate(model: torch.nn.Module, loader: Any, reference: Any, settings: QASettings,
                accelerator: Any) -> dict[str, float]:
    model.eval()
    starts, ends = [], []
    for batch in loader:
        out = model(**batch)
        lengths = batch["attention_mask"].sum(-1)
        start = accelerator.pad_across_processes(out.start_logits, dim=1, pad_index=-1e4)
        end = accelerator.pad_across_processes(out.end_logits, dim=1, pad_index=-1e4)
        start, end, lengths = accelerator.gather_for_metrics((start, end, lengths))
        for s, e, n in zip(start.float().cpu().numpy(), end.float().cpu().numpy(), lengths.cpu().tolist()):
            starts.append(np.asarray(s[:n]))  # (tokens,) without padding
            ends.append(np.asarray(e[:n]))
    examples, features = reference
    predictions = postprocess(examples, features, starts, ends, settings)
    scores = squad_v2_scores(examples, predictions)
    return {k: v for k, v in scores.items() if not k.endswith("total")}
