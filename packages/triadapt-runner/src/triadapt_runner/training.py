"""One training run on accelerate: data, model, the run's method (TriAdaptLoRA or a peer), AdamW, evaluation.

T (optimizer steps) is derived from the data, epochs, accumulation and world size; the
method's plan (TriAdaptLoRA: the growth schedule) is printed before step 1; the loop drives
the method after every optimizer step, so allocation cannot be forgotten.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from triadapt.config import regime_interval
from triadapt.gradients import set_grad_accessor
from triadapt_runner import quantization
from triadapt_runner.checkpointing import Checkpointer, Progress, trainable_only
from triadapt_runner.config import RunConfig
from triadapt_runner.tasks.data.loading import load_task
from triadapt_runner.distributed.processes import gather
from triadapt_runner.distributed.setup import Prepared, ProcessSetup, setup_for
from triadapt_runner.errors import RunnerError
from triadapt_runner.tasks.registry import kind_for
from triadapt_runner.methods.base import Adapted, MethodPlan
from triadapt_runner.methods.registry import method_for
from triadapt_runner.models import model_path
from triadapt_runner.preflight import optimizer_steps
from triadapt_runner.tracking.results import RunResult, finish

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_")

LogFn = Callable[[dict[str, float], int], None]

__all__ = ["RunResult", "train_run"]


@dataclass
class Run:
    """One run, set up: what the loop reads and drives."""

    cfg: RunConfig
    accelerator: Accelerator
    task: Any
    kind: Any
    loaders: Any
    shuffle: torch.Generator  # the training loader's generator, reseeded per epoch
    adapted: Adapted
    setup: ProcessSetup  # one process, DDP or DeepSpeed
    prepared: Prepared  # model (DDP / DeepSpeed engine), optimizer and schedule after accelerator.prepare
    total_steps: int
    state: Progress = field(default_factory=Progress)
    step_times: list[float] = field(default_factory=list)


def train_run(cfg: RunConfig, output_dir: str | Path, log: LogFn | None = None, progress: bool = True,
              accelerator: Accelerator | None = None, checkpoint_dir: str | Path | None = None,
              on_set_up: Callable[[], None] | None = None) -> RunResult:
    """Train and evaluate one run; writes the adapter and plots to ``output_dir``.

    The same code serves one process, DDP and DeepSpeed (see `triadapt_runner.distributed.setup`).
    With ``checkpoint_dir``, the whole training state is saved there every
    ``train.checkpoint_every`` optimizer steps (default: at every growth event) and a rerun
    resumes from the latest complete checkpoint. ``on_set_up`` is called once data, model,
    adapters and optimizer are ready, before the first step (the runner opens the MLflow run
    there, so that a run that cannot be set up leaves none).
    """
    hf_logging.set_verbosity_error()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    setup = setup_for(cfg.train, accelerator.num_processes if accelerator else None)
    with setup.process_environment():  # plain-process DeepSpeed: a world of one, for this run only
        return _train(cfg, setup, output_dir, log, progress, accelerator, checkpoint_dir, on_set_up)


def _train(cfg: RunConfig, setup: ProcessSetup, output_dir: str | Path, log: LogFn | None, progress: bool,
           accelerator: Accelerator | None, checkpoint_dir: str | Path | None,
           on_set_up: Callable[[], None] | None) -> RunResult:
    run = _set_up(cfg, accelerator or setup.make_accelerator(), setup)
    if on_set_up is not None:
        on_set_up()
    acc, state = run.accelerator, run.state
    acc.register_for_checkpointing(run.adapted, state)
    acc.register_save_state_pre_hook(trainable_only(run.prepared.model))
    checkpoints = Checkpointer(acc, checkpoint_dir, setup) if checkpoint_dir else None
    resumed = checkpoints.latest() if checkpoints else None
    if resumed is not None:
        checkpoints.load(resumed, state)
        if acc.is_main_process:
            print(f"[{cfg.label}] resumed from {resumed} (step {state.step} of {run.total_steps})", flush=True)
    evaluation, kept = None, {}
    bar = tqdm(total=run.total_steps, initial=state.step, desc=cfg.label,
               disable=not (progress and acc.is_main_process), leave=False)
    for epoch in range(state.epoch, cfg.train.epochs + 1):
        _train_epoch(run, epoch, resumed is not None, log, bar, checkpoints)
        evaluation = run.kind.evaluate(run.prepared.model, run.loaders, cfg, run.task, acc)
        kept.update({name.replace(".json", f"-epoch{epoch}.json"): data for name, data in evaluation.per_epoch.items()})
        state.history.append({"epoch": epoch, **evaluation.scores})
        if log:
            log({f"eval_{k}": v for k, v in evaluation.scores.items()}, state.step)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
    bar.close()
    set_grad_accessor(None)
    result = finish(cfg, run.task, run.adapted, state.history, Path(output_dir), run.total_steps, acc,
                    {**(evaluation.artifacts if evaluation else {}), **kept}, run.step_times)
    result.world_size = acc.num_processes
    return result


def _set_up(cfg: RunConfig, accelerator: Accelerator, setup: ProcessSetup) -> Run:
    """Data, model, the method attached, optimizer and schedule, all prepared; T checked against the preflight's."""
    set_seed(cfg.train.seed)
    task, splits = load_task(cfg.data)
    kind = kind_for(task)
    tokenizer = AutoTokenizer.from_pretrained(model_path(cfg.model))
    loaders = kind.build_loaders(cfg, task, splits, tokenizer)
    with setup.building_model(accelerator):  # ZeRO-3: partitioned as it is built, unless zero3_init is false
        model = kind.build_model(model_path(cfg.model), task, load=quantization.load_kwargs(cfg))
    if cfg.train.gradient_checkpointing:
        _checkpoint_activations(model, cfg)
    shuffle = loaders.train.generator  # reseeded per epoch: the data order depends on (seed, epoch) only
    items = len(loaders.train.dataset)
    loaders.train, loaders.evaluation = accelerator.prepare(loaders.train, loaders.evaluation)
    # per-process batches after sharding; the last partial accumulation window still makes a step
    total_steps = math.ceil(len(loaders.train) / cfg.train.gradient_accumulation_steps) * cfg.train.epochs
    if total_steps != optimizer_steps(items, cfg.train, accelerator.num_processes):
        raise RunnerError(f"internal error: the loader gives T={total_steps}, the preflight derived "
                          f"T={optimizer_steps(items, cfg.train, accelerator.num_processes)}; please report this")
    method = method_for(cfg)
    _print_plan(accelerator, cfg, total_steps, method.plan(model, cfg, total_steps))
    adapted = method.attach(model, cfg, total_steps)
    optimizer = setup.optimizer(_param_groups(adapted.model, cfg.train.weight_decay))
    world = accelerator.num_processes  # accelerate steps a prepared scheduler once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps) * world,
                                                total_steps * world)
    prepared = setup.prepare(accelerator, adapted, optimizer, scheduler)
    return Run(cfg, accelerator, task, kind, loaders, shuffle, adapted, setup, prepared, total_steps)


def _checkpoint_activations(model: torch.nn.Module, cfg: RunConfig) -> None:
    """Gradient checkpointing, non-reentrant: the frozen base's inputs need no gradient for the adapters to get one."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RunnerError(f"train.gradient_checkpointing=True is invalid for model={cfg.model!r}: its class does not "
                          f"support gradient checkpointing")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def _train_epoch(run: Run, epoch: int, resumed: bool, log: LogFn | None, bar: Any, checkpoints: Any) -> None:
    """The optimizer steps of one epoch (from where a resumed run stopped), with logging and checkpoints."""
    cfg, acc, state, adapted = run.cfg, run.accelerator, run.state, run.adapted
    every = cfg.train.checkpoint_every or adapted.checkpoint_interval or regime_interval(run.total_steps)
    run.prepared.model.train()
    run.shuffle.manual_seed(cfg.train.seed + (epoch - 1) * 1_000_003)  # epoch 1: the seed itself
    skip = state.batches_in_epoch if epoch == state.epoch else 0
    batches = iter(acc.skip_first_batches(run.loaders.train, skip) if skip else run.loaders.train)
    if resumed and state.torch_rng is not None:  # dropout continues as if never interrupted
        torch.set_rng_state(state.torch_rng)
        state.torch_rng = None
    state.epoch, state.batches_in_epoch = epoch, skip
    started = time.perf_counter()
    for batch in batches:
        state.batches_in_epoch += 1
        with acc.accumulate(run.prepared.model):
            loss = run.prepared.model(**batch).loss
            stepped, event = run.setup.backward_and_step(acc, run.prepared, loss + adapted.extra_loss(), adapted,
                                                         state.step + 1)
            if not stepped:
                continue
        state.step += 1
        run.step_times.append(time.perf_counter() - started)
        if event is not None:
            check_same_ranks(acc, adapted, state.step)
        bar.update(1)
        if log and (state.step % cfg.train.log_every == 0 or event is not None or state.step == run.total_steps):
            lr = float(run.prepared.scheduler.get_last_lr()[0])
            log({"loss": float(loss.detach()), "lr": lr, **adapted.step_metrics()}, state.step)
        if checkpoints and state.step % every == 0 and state.step < run.total_steps:
            checkpoints.save(state.step)
        started = time.perf_counter()


def check_same_ranks(accelerator: Accelerator, adapted: Adapted, step: int) -> None:
    """All processes must have taken the same growth decision; stop loudly if they have not."""
    patterns = gather(accelerator, adapted.ranks())
    if any(p != patterns[0] for p in patterns[1:]):
        differing = [i for i, p in enumerate(patterns) if p != patterns[0]]
        raise RunnerError(f"processes {differing} took other growth decisions than process 0 at step "
                          f"{step}; scores must come from identical factors on every process")


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # DeepSpeed drops an empty group, then the LR schedule would not fit


def _print_plan(accelerator: Accelerator, cfg: RunConfig, total: int, plan: MethodPlan) -> None:
    if not accelerator.is_main_process:
        return
    print(f"[{cfg.label}] T={total} optimizer steps; {plan.num_matrices} matrices; {plan.summary}", flush=True)
    if plan.warning:
        print(f"[{cfg.label}] {plan.warning}", flush=True)
