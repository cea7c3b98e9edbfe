"""One training run on accelerate: data, model, TriAdapt adapters, AdamW, schedule, evaluation.

T (optimizer steps) is derived from the data, epochs, accumulation and world size; the
growth schedule is validated and printed before step 1; the runner calls the controller
after every optimizer step, so allocation cannot be forgotten.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from triadapt import Controller, Schedule, inject
from triadapt.gradients import set_grad_accessor
from triadapt_runner.checkpointing import Checkpointer, Progress, trainable_only
from triadapt_runner.config import RunConfig
from triadapt_runner.data.loading import load_task
from triadapt_runner.data.tasks import TaskSpec
from triadapt_runner.distributed import (gather, install_grad_accessor, keep_units_whole,
                                         make_accelerator, make_units_whole, save_adapter, uses_deepspeed, zero_stage)
from triadapt_runner.errors import RunnerError
from triadapt_runner.kinds import kind_for
from triadapt_runner.models import model_path
from triadapt_runner.plots import rank_heatmap
from triadapt_runner.preflight import optimizer_steps

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
    world_size: int = 1


def train_run(cfg: RunConfig, output_dir: str | Path, log: LogFn | None = None, progress: bool = True,
              accelerator: Accelerator | None = None, checkpoint_dir: str | Path | None = None) -> RunResult:
    """Train and evaluate one run; writes the adapter and plots to ``output_dir``.

    The same code serves one process, DDP and DeepSpeed (see `triadapt_runner.distributed`).
    With ``checkpoint_dir``, the whole training state is saved there every
    ``train.checkpoint_every`` optimizer steps (default: at every growth event) and a rerun
    resumes from the latest complete checkpoint.
    """
    hf_logging.set_verbosity_error()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = accelerator or make_accelerator(cfg.train)
    set_seed(cfg.train.seed)
    task, splits = load_task(cfg.data)
    kind = kind_for(task)
    tokenizer = AutoTokenizer.from_pretrained(model_path(cfg.model))
    loaders = kind.build_loaders(cfg, task, splits, tokenizer)
    model = kind.build_model(model_path(cfg.model), task)
    shuffle = loaders.train.generator  # reseeded per epoch: the data order depends on (seed, epoch) only
    items = len(loaders.train.dataset)
    loaders.train, loaders.evaluation = accelerator.prepare(loaders.train, loaders.evaluation)
    train_loader = loaders.train

    # per-process batches after sharding; the last partial accumulation window still makes a step
    steps_per_epoch = math.ceil(len(train_loader) / cfg.train.gradient_accumulation_steps)
    total_steps = steps_per_epoch * cfg.train.epochs
    if total_steps != optimizer_steps(items, cfg.train, accelerator.num_processes):
        raise RunnerError(f"internal error: the loader gives T={total_steps}, the preflight derived "
                          f"T={optimizer_steps(items, cfg.train, accelerator.num_processes)}; please report this")
    ctl = inject(model, cfg.adapter_config(total_steps))
    _print_schedule(accelerator, cfg, total_steps, ctl, ctl.validate_schedule())

    optimizer = _optimizer(model, cfg)
    world = accelerator.num_processes  # accelerate steps a prepared scheduler once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps) * world,
                                                total_steps * world)
    units = [p for layer in ctl.layers.values() for p in layer.units.parameters()]
    keep_units_whole(accelerator, max(p.numel() for p in units))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if zero_stage(accelerator) == 3:
        make_units_whole(units)
    install_grad_accessor(accelerator)
    engine = model if uses_deepspeed(accelerator) else None

    state = Progress()
    accelerator.register_for_checkpointing(ctl, state)
    accelerator.register_save_state_pre_hook(trainable_only(model))
    checkpoints = Checkpointer(accelerator, checkpoint_dir) if checkpoint_dir else None
    every = cfg.train.checkpoint_every or ctl.config.growth_interval
    resumed = checkpoints.latest() if checkpoints else None
    if resumed is not None:
        checkpoints.load(resumed, state)
        if accelerator.is_main_process:
            print(f"[{cfg.label}] resumed from {resumed} (step {state.step} of {total_steps})", flush=True)

    evaluation = None
    bar = tqdm(total=total_steps, initial=state.step, desc=cfg.label,
               disable=not (progress and accelerator.is_main_process), leave=False)
    for epoch in range(state.epoch, cfg.train.epochs + 1):
        model.train()
        shuffle.manual_seed(cfg.train.seed + (epoch - 1) * 1_000_003)  # epoch 1: the seed itself
        skip = state.batches_in_epoch if epoch == state.epoch else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        batches = iter(loader)
        if resumed is not None and state.torch_rng is not None:  # dropout continues as if never interrupted
            torch.set_rng_state(state.torch_rng)
            state.torch_rng = None
        state.epoch, state.batches_in_epoch = epoch, skip
        for batch in batches:
            state.batches_in_epoch += 1
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                if not _backward_and_step(accelerator, engine, loss + ctl.orthogonal_loss(), ctl, model, optimizer,
                                          scheduler, cfg.train.max_grad_norm):
                    continue
            state.step += 1
            event = ctl.step()  # an optimizer step happened: count it, grow if due
            if event is not None:
                check_same_ranks(accelerator, ctl)
            bar.update(1)
            if log and (state.step % cfg.train.log_every == 0 or event is not None or state.step == total_steps):
                log(_step_metrics(loss, scheduler, ctl), state.step)
            if checkpoints and state.step % every == 0 and state.step < total_steps:
                checkpoints.save(state.step)
        evaluation = kind.evaluate(model, loaders, cfg, task, accelerator)
        state.history.append({"epoch": epoch, **evaluation.scores})
        if log:
            log({f"eval_{k}": v for k, v in evaluation.scores.items()}, state.step)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
    bar.close()
    set_grad_accessor(None)
    result = _finish(cfg, task, ctl, state.history, Path(output_dir), total_steps, accelerator,
                     evaluation.artifacts if evaluation else {})
    result.world_size = accelerator.num_processes
    return result


def _backward_and_step(accelerator: Accelerator, engine: Any, loss: torch.Tensor, ctl: Controller,
                       model: torch.nn.Module, optimizer: Any, scheduler: Any, max_grad_norm: float) -> bool:
    """Backward; at an accumulation boundary let gradient-reading scorers observe, then step. True if stepped."""
    sync = accelerator.sync_gradients
    if engine is not None:  # DeepSpeed: gradients exist only between backward and engine.step()
        engine.set_gradient_accumulation_boundary(is_boundary=sync)
        engine.backward(loss)
        if sync:
            ctl.observe_gradients()
            engine.step()  # clipping (from the DeepSpeed config), optimizer step, zero_grad
            scheduler.step()  # accelerate keeps our LambdaLR outside the engine
        return sync
    accelerator.backward(loss)
    if sync:
        ctl.observe_gradients()
        if max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sync


def check_same_ranks(accelerator: Accelerator, ctl: Controller) -> None:
    """All processes must have taken the same growth decision; stop loudly if they have not."""
    patterns = gather(accelerator, ctl.ranks)
    if any(p != patterns[0] for p in patterns[1:]):
        differing = [i for i, p in enumerate(patterns) if p != patterns[0]]
        raise RunnerError(f"processes {differing} took other growth decisions than process 0 at step "
                          f"{ctl.step_count}; scores must come from identical factors on every process")


def _optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.train.weight_decay)
    if cfg.train.offload_optimizer and torch.cuda.is_available():
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # the fast host optimizer for ZeRO-Offload

        return DeepSpeedCPUAdam(groups, lr=cfg.train.learning_rate, adamw_mode=True)
    # fused AdamW: one kernel over the many small rank-unit tensors (same maths as the for-loop version);
    # DeepSpeed flattens the parameters into a few partitions itself, where the default implementation is used
    fused = not (cfg.train.zero_stage is not None or cfg.train.deepspeed_config)
    return torch.optim.AdamW(groups, lr=cfg.train.learning_rate, fused=fused)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _step_metrics(loss: torch.Tensor, scheduler: Any, ctl: Controller) -> dict[str, float]:
    return {"loss": float(loss.detach()), "lr": float(scheduler.get_last_lr()[0]),
            "total_rank": float(ctl.allocator.total_rank()), "budget_left": float(ctl.allocator.remaining_budget())}


def _print_schedule(accelerator: Accelerator, cfg: RunConfig, total: int, ctl: Controller, schedule: Schedule) -> None:
    if not accelerator.is_main_process:
        return
    print(f"[{cfg.label}] T={total} optimizer steps; {len(ctl.layers)} matrices; budget {ctl.allocator.initial_budget};"
          f" {schedule.summary()}", flush=True)
    warning = schedule.warning()
    if warning:
        print(f"[{cfg.label}] {warning}", flush=True)


def _finish(cfg: RunConfig, task: TaskSpec, ctl: Controller, history: list[dict[str, float]], out: Path,
            total_steps: int, accelerator: Accelerator, artifacts: dict[str, Any]) -> RunResult:
    main = task.main_metric
    chosen = max(history, key=lambda h: h[main]) if cfg.train.report == "best" else history[-1]
    protocol = {"report": cfg.train.report, "split": "validation", "epoch": int(chosen["epoch"]),
                "main_metric": main, "seed": cfg.train.seed}
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(ctl, out / "adapter", accelerator)
    metrics = {k: v for k, v in chosen.items() if k != "epoch"}
    result = RunResult(metrics=metrics, protocol=protocol, history=history, ranks=ctl.ranks,
                       events=[e.to_dict() for e in ctl.events], output_dir=out, total_steps=total_steps)
    if not accelerator.is_main_process:
        return result
    for name, data in artifacts.items():  # of the final model's evaluation, i.e. of the saved adapter
        (out / name).write_text(json.dumps(data))
    rank_heatmap(ctl.ranks, out / "rank_heatmap.png", title=f"{cfg.label} on {cfg.data.task}: final ranks")
    (out / "growth_events.json").write_text(json.dumps(result.events, indent=2))
    _write_trajectory(out / "rank_trajectory.csv", ctl, result.events)
    return result


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
