"""Process setup for single-process, DDP and DeepSpeed (ZeRO 0-3) runs; the same loop serves all.

* DDP (``accelerate launch --multi_gpu``, ``torchrun``): a matrix's rank units are the rows of
  one parameter; inactive rows get a zero gradient. DDP runs with ``find_unused_parameters=True``
  (a layer of rank 0, or a method's unused head, takes no part in the forward).
* DeepSpeed (``train.zero_stage`` or ``train.deepspeed_config``): accelerate's DeepSpeed plugin.
  The unit parameters are small; under ZeRO-3 they are kept whole on every process (DeepSpeed's
  parameter persistence threshold is raised above the largest one) while the base weights are
  partitioned, so scores, growth and the regulariser always see the true factors. The runner
  checks that after ``deepspeed.initialize`` and installs a ZeRO-aware gradient accessor.
* CPU runs use the gloo backend. Unsupported setups (FSDP, fp16) fail before training. DeepSpeed's
  CPU all-reduce maps a 66 MB file per process in ``/dev/shm`` and never removes it; the runner
  removes its process's own when the process exits (a machine would otherwise fill up run by run).
"""

from __future__ import annotations

import atexit
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from triadapt.errors import TriAdaptError
from triadapt.gradients import set_grad_accessor
from triadapt_runner.config import TrainConfig, read_deepspeed_config
from triadapt_runner.errors import RunnerError
from triadapt_runner.distributed.launch import check_launch_environment, is_main_process, world_size


def make_accelerator(train: TrainConfig) -> Accelerator:
    """An Accelerator for this run; the process group (if any) is created once and reused by later runs."""
    check_launch_environment()
    if AcceleratorState._shared_state:  # an earlier run (grid cell) of this process; the process group stays
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if world_size() > 1 and not torch.cuda.is_available():
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    plugin = deepspeed_plugin(train)
    if plugin is not None and not torch.cuda.is_available():
        _release_shm_buffer_at_exit()
    return Accelerator(gradient_accumulation_steps=train.gradient_accumulation_steps,
                       mixed_precision=train.mixed_precision, deepspeed_plugin=plugin, kwargs_handlers=handlers)


_SHM_RELEASE: list[bool] = []


def _release_shm_buffer_at_exit() -> None:
    if not _SHM_RELEASE:
        _SHM_RELEASE.append(True)
        atexit.register(unlink_shm_buffer)


def shm_buffer_name(rank: int | str | None = None) -> str:
    """The /dev/shm file DeepSpeed's CPU all-reduce creates for a process (``deepspeed/ops/csrc/cpu/comm/shm.cpp``)."""
    rank = os.environ.get("RANK", "0") if rank is None else rank
    return (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '(null)')}_"
            f"{os.environ.get('MASTER_PORT', '(null)')}_{rank}")


def unlink_shm_buffer() -> None:
    """Remove this process's all-reduce file; processes that mapped it keep their mapping until they exit."""
    with suppress(OSError):
        (Path("/dev/shm") / shm_buffer_name()).unlink()


def deepspeed_plugin(train: TrainConfig) -> DeepSpeedPlugin | None:
    if train.zero_stage is None and not train.deepspeed_config:
        return None
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise RunnerError("train.zero_stage needs DeepSpeed: pip install 'triadapt-runner[deepspeed]'") from None
    config = read_deepspeed_config(train.deepspeed_config) if train.deepspeed_config else {}
    zero = dict(config.get("zero_optimization") or {})
    if train.zero_stage is not None:
        zero["stage"] = train.zero_stage
    zero.setdefault("stage", 0)
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        if not torch.cuda.is_available():  # CPU-only: the torch AdamW already runs where the state lives
            config["zero_force_ds_cpu_optimizer"] = False
    config["zero_optimization"] = zero
    config["gradient_accumulation_steps"] = train.gradient_accumulation_steps
    config["gradient_clipping"] = train.max_grad_norm
    config.setdefault("train_micro_batch_size_per_gpu", train.batch_size)
    config.setdefault("train_batch_size", "auto")
    if train.mixed_precision == "bf16":
        config["bf16"] = {"enabled": True}
    # ZeRO-3: transformers builds the model inside deepspeed.zero.Init (partitioned from the start) unless
    # train.zero3_init is false (see model_building)
    return DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=train.zero3_init is not False)


def model_building(accelerator: Accelerator, train: TrainConfig) -> Any:
    """The context in which the run builds its model: under ZeRO-3 partitioned (deepspeed.zero.Init, as accelerate
    sets up), or whole on every process with ``train.zero3_init: false`` (partitioned later by deepspeed.initialize)."""
    import contextlib

    if zero_stage(accelerator) == 3 and train.zero3_init is False:
        return _built_whole(accelerator.state.deepspeed_plugin)
    return contextlib.nullcontext()


@contextmanager
def _built_whole(plugin: DeepSpeedPlugin) -> Iterator[None]:
    """transformers builds under zero.Init whenever a ZeRO-3 DeepSpeed config is registered: unregister it meanwhile."""
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Accelerator) -> int | None:
    if not uses_deepspeed(accelerator):
        return None
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"].get("stage", 0))


def keep_units_whole(accelerator: Accelerator, largest_unit: int) -> None:
    """Under ZeRO-3, raise the persistence threshold so that no rank unit is partitioned (before prepare)."""
    if zero_stage(accelerator) != 3:
        return
    zero = accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]
    threshold = zero.get("stage3_param_persistence_threshold", "auto")
    if threshold == "auto" or int(threshold) < largest_unit:
        zero["stage3_param_persistence_threshold"] = int(largest_unit)


def make_units_whole(unit_params: list[torch.nn.Parameter]) -> None:
    """After deepspeed.initialize under ZeRO-3: every rank unit gathered and kept whole (`triadapt.zero3`)."""
    from triadapt.zero3 import make_units_whole as gather_units

    try:
        gather_units(unit_params, where="train.deepspeed_config")
    except TriAdaptError as exc:
        raise RunnerError(str(exc)) from None


def install_grad_accessor(accelerator: Accelerator) -> None:
    """Scorers that read gradients get the full gradient under ZeRO (safe_get_full_grad), else param.grad."""
    if uses_deepspeed(accelerator):
        from deepspeed.utils import safe_get_full_grad

        set_grad_accessor(safe_get_full_grad)
    else:
        set_grad_accessor(None)


def gather(accelerator: Accelerator, value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if accelerator.num_processes == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, value)
    return out


def save_adapter(ctl: Any, path: Any, accelerator: Accelerator) -> None:
    """Save the adapter from the main process, gathering ZeRO-3-partitioned heads first; verify the file.

    Every process must call this (the gather is collective). The written tensors are read back
    and compared with the live ones: an empty or differing tensor is an error, not a silent
    half-saved adapter.
    """
    from safetensors.torch import load_file

    from triadapt.persistence import WEIGHTS_FILE, adapter_tensors

    params = [p for h in ctl.heads for p in ctl.model.get_submodule(h).parameters()]
    params += [layer.units for layer in ctl.layers.values()]
    with _gathered(accelerator, params):
        if accelerator.is_main_process:
            ctl.save(path)
            live = adapter_tensors(ctl)
            saved = load_file(str(path / WEIGHTS_FILE))
            bad = sorted(k for k, v in live.items()
                         if k not in saved or saved[k].numel() == 0 or not torch.equal(saved[k], v.cpu()))
            if bad:
                raise RunnerError(f"{path / WEIGHTS_FILE}: {len(bad)} tensors are empty or differ from the model "
                                  f"after saving (first: {bad[0]}); the adapter was not saved correctly")
    accelerator.wait_for_everyone()


def _gathered(accelerator: Accelerator, params: list[torch.nn.Parameter]) -> Any:
    import contextlib

    if zero_stage(accelerator) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


# -- process group and main-process decisions -------------------------------------------------------
_JOINED: list[bool] = []  # init_processes created the process group (leave_processes destroys only that one)


def init_processes() -> None:
    """Under a multi-process launch (torchrun, deepspeed, accelerate launch), join the process group once."""
    import torch.distributed as dist

    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        _JOINED.append(True)


def leave_processes() -> None:
    """At the end of a command that succeeded on this process: wait for the others, then destroy the group.

    Only the group init_processes created (a caller's own group is the caller's to destroy); NCCL warns of
    leaked resources when a process exits without this. Not for a process that failed: another one may still
    be inside a collective call and would never reach the barrier; the launcher stops them instead.
    """
    import torch.distributed as dist

    if _JOINED and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _JOINED.clear()


def main_only(fn: Any, share: bool = True) -> Any:
    """Run ``fn`` on the main process only; every process gets its result (if ``share``) or its error.

    Non-main processes get None when ``share`` is false. A bad tracking URI or a changed grid
    spec then stops every process with the same one-line message instead of leaving the
    others waiting in a collective call.
    """
    import torch.distributed as dist

    if world_size() == 1 or not dist.is_initialized():
        return fn()
    value, box = None, [("ok", None)]
    if is_main_process():
        try:
            value = fn()
            box = [("ok", value if share else None)]
        except RunnerError as exc:
            box = [("error", str(exc))]
    dist.broadcast_object_list(box, src=0)
    kind, shared = box[0]
    if kind == "error":
        raise RunnerError(shared)
    return value if is_main_process() else shared
