"""How the processes of a run work together, behind one interface: `ProcessSetup`.

* `TorchProcesses`: one process, or DDP under a launcher (``torchrun``, ``accelerate launch``). A
  matrix's rank units are the rows of one parameter; inactive rows get a zero gradient. DDP runs
  with ``find_unused_parameters=True`` (a layer of rank 0, or a method's unused head, takes no
  part in the forward).
* `DeepSpeedZero` (``train.zero_stage`` or ``train.deepspeed_config``): accelerate's DeepSpeed
  plugin. The unit parameters are small; under ZeRO-3 they are kept whole on every process
  (DeepSpeed's parameter persistence threshold is raised above the largest one) while the base
  weights are partitioned, so scores, growth and the regulariser always see the true factors.
  Without a launcher it runs as a world of one: the set-up gives the process the rank, world size
  and a free port DeepSpeed reads (it would otherwise look for MPI).

The training loop, the checkpoints and the preflight ask the set-up (`setup_for`) and never which
one they hold. CPU runs use gloo. Unsupported setups (FSDP, fp16) fail before training.
"""

from __future__ import annotations

import contextlib
import os
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from triadapt_runner.distributed.deepspeed_config import configured_stage, read_deepspeed_config
from triadapt_runner.distributed.launch import check_launch_environment, world_size
from triadapt_runner.errors import RunnerError


@dataclass
class Prepared:
    """The model, optimizer and schedule after ``accelerator.prepare`` (``engine``: DeepSpeed's, or None)."""

    model: Any
    optimizer: Any
    scheduler: Any
    engine: Any = None


class ProcessSetup(ABC):
    """One way of running a training over processes. Built per run from its ``train`` section."""

    def __init__(self, train: Any, world: int | None = None):
        self.train, self.world = train, world or world_size()

    @property
    def shares_work(self) -> bool:
        """Whether more than one process, or DeepSpeed's engine, takes part in the training."""
        return self.world > 1

    def check(self, cfg: Any, method: Any) -> None:
        """Refuse, before anything starts, a method that cannot run under this set-up."""
        if self.shares_work and not method.distributed:
            raise RunnerError(f"approach={cfg.approach!r} is invalid in a multi-process or DeepSpeed run: it runs in "
                              f"one process; use a method that supports DDP and DeepSpeed (e.g. triadapt)")

    def make_accelerator(self) -> Any:
        """An Accelerator for this run; the process group (if any) is created once and reused by later runs."""
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

        check_launch_environment()
        if AcceleratorState._shared_state:  # an earlier run (grid cell) of this process; the process group stays
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
        if self.world > 1 and not torch.cuda.is_available():
            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        return Accelerator(gradient_accumulation_steps=self.train.gradient_accumulation_steps,
                           mixed_precision=self.train.mixed_precision, deepspeed_plugin=self._plugin(),
                           kwargs_handlers=handlers)

    def _plugin(self) -> Any:
        return None

    def process_environment(self) -> ContextManager[Any]:
        """The environment variables this set-up needs while a run trains (restored afterwards)."""
        return contextlib.nullcontext()

    def launch_environment(self) -> dict[str, str]:
        """What a launcher's processes need for this set-up on this machine (the runner's own k-process jobs)."""
        return {} if torch.cuda.is_available() else {"ACCELERATE_USE_CPU": "1"}  # DDP on CPU: else unsynchronised

    def building_model(self, accelerator: Any) -> ContextManager[Any]:
        """The context in which the run builds its model."""
        return contextlib.nullcontext()

    def optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        # fused AdamW: one kernel over the many small rank-unit tensors (same maths as the for-loop version)
        return torch.optim.AdamW(groups, lr=self.train.learning_rate, fused=True)

    @abstractmethod
    def prepare(self, accelerator: Any, adapted: Any, optimizer: Any, scheduler: Any) -> Prepared:
        """``accelerator.prepare`` with what this set-up needs around it (gradient access, whole rank units)."""

    @abstractmethod
    def backward_and_step(self, accelerator: Any, prepared: Prepared, loss: torch.Tensor, adapted: Any,
                          step: int) -> tuple[bool, Any]:
        """Backward; at an accumulation boundary let the method see the gradients, step, then act on the step.

        Returns (whether an optimizer step happened, the method's event). The method acts between
        ``optimizer.step()`` and ``zero_grad()`` (gradients still there: AdaLoRA's allocation needs them), and
        before the LR schedule steps (the step's learning rate is still in the optimizer, as a post-step hook
        would see it).
        """

    def save_state_kwargs(self) -> dict[str, Any]:
        """Arguments of ``accelerator.save_state`` for a checkpoint."""
        return {}

    def load_state_kwargs(self) -> dict[str, Any]:
        """Arguments of ``accelerator.load_state``: only trainable weights are in a checkpoint."""
        return {"strict": False}


class TorchProcesses(ProcessSetup):
    """One process, or DDP under a launcher."""

    def prepare(self, accelerator: Any, adapted: Any, optimizer: Any, scheduler: Any) -> Prepared:
        from triadapt.gradients import set_grad_accessor

        model, optimizer, scheduler = accelerator.prepare(adapted.model, optimizer, scheduler)
        set_grad_accessor(None)
        return Prepared(model, optimizer, scheduler)

    def backward_and_step(self, accelerator: Any, prepared: Prepared, loss: torch.Tensor, adapted: Any,
                          step: int) -> tuple[bool, Any]:
        sync = accelerator.sync_gradients
        accelerator.backward(loss)
        if sync:
            adapted.before_optimizer_step()
            if self.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(prepared.model.parameters(), self.train.max_grad_norm)
        prepared.optimizer.step()
        event = adapted.after_optimizer_step(step, prepared.optimizer) if sync else None
        prepared.scheduler.step()  # after the method: the refresh redoes this step's update at this step's rate
        prepared.optimizer.zero_grad(set_to_none=True)
        return sync, event


class DeepSpeedZero(ProcessSetup):
    """DeepSpeed ZeRO 0-3 through accelerate's plugin; one process without a launcher, or a launched world."""

    def __init__(self, train: Any, world: int | None = None):
        super().__init__(train, world)
        self.stage = configured_stage(train) or 0

    @property
    def shares_work(self) -> bool:
        return True

    def make_accelerator(self) -> Any:
        if not torch.cuda.is_available():
            _release_shm_buffer_at_exit()
        return super().make_accelerator()

    def process_environment(self) -> ContextManager[Any]:
        return deepspeed_for_this_run()

    def launch_environment(self) -> dict[str, str]:
        return {}  # accelerate turns DeepSpeed off under ACCELERATE_USE_CPU

    def _plugin(self) -> Any:
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise RunnerError("train.zero_stage needs DeepSpeed: pip install 'triadapt-runner[deepspeed]'") from None
        from accelerate.utils import DeepSpeedPlugin

        train = self.train
        config = read_deepspeed_config(train.deepspeed_config) if train.deepspeed_config else {}
        zero = dict(config.get("zero_optimization") or {})
        zero["stage"] = self.stage
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
        # train.zero3_init is false (see building_model)
        return DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=train.zero3_init is not False)

    def building_model(self, accelerator: Any) -> ContextManager[Any]:
        """Under ZeRO-3 partitioned (deepspeed.zero.Init, as accelerate sets up), or whole on every process with
        ``train.zero3_init: false`` (partitioned later by deepspeed.initialize)."""
        if self.stage == 3 and self.train.zero3_init is False:
            return _built_whole(accelerator.state.deepspeed_plugin)
        return contextlib.nullcontext()

    def optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        if self.train.offload_optimizer and torch.cuda.is_available():
            from deepspeed.ops.adam import DeepSpeedCPUAdam  # the fast host optimizer for ZeRO-Offload

            return DeepSpeedCPUAdam(groups, lr=self.train.learning_rate, adamw_mode=True)
        # DeepSpeed flattens the parameters into a few partitions itself: the default implementation
        return torch.optim.AdamW(groups, lr=self.train.learning_rate, fused=False)

    def prepare(self, accelerator: Any, adapted: Any, optimizer: Any, scheduler: Any) -> Prepared:
        from deepspeed.utils import safe_get_full_grad

        from accelerate.utils import DistributedType

        from triadapt.gradients import set_grad_accessor

        if accelerator.distributed_type != DistributedType.DEEPSPEED:
            raise RunnerError(f"train.zero_stage={self.stage} is invalid in this environment: accelerate did not set up "
                              f"DeepSpeed ({accelerator.distributed_type}); unset ACCELERATE_USE_CPU, which turns it off")
        persistent = adapted.persistent_params()
        if self.stage == 3:
            keep_units_whole(accelerator, max((p.numel() for p in persistent), default=0))
            if self.train.mixed_precision == "bf16":
                cast_unpartitioned(adapted.model, torch.bfloat16)
        model, optimizer, scheduler = accelerator.prepare(adapted.model, optimizer, scheduler)
        if self.stage == 3 and persistent:
            make_units_whole(persistent)
        adapted.follow_deepspeed(model.optimizer)  # grown units stay fresh in DeepSpeed's fp32 copies
        set_grad_accessor(safe_get_full_grad)  # scorers that read gradients get the full gradient under ZeRO
        return Prepared(model, optimizer, scheduler, engine=model)

    def backward_and_step(self, accelerator: Any, prepared: Prepared, loss: torch.Tensor, adapted: Any,
                          step: int) -> tuple[bool, Any]:
        engine, sync = prepared.engine, accelerator.sync_gradients
        engine.set_gradient_accumulation_boundary(is_boundary=sync)  # gradients exist only until engine.step()
        engine.backward(loss)
        if not sync:
            return False, None
        adapted.before_optimizer_step()
        engine.step()  # clipping (from the DeepSpeed config), optimizer step, zero_grad
        event = adapted.after_optimizer_step(step, engine.optimizer)
        prepared.scheduler.step()  # accelerate keeps our LambdaLR outside the engine
        return True, event

    def save_state_kwargs(self) -> dict[str, Any]:
        return {"exclude_frozen_parameters": True}

    def load_state_kwargs(self) -> dict[str, Any]:
        return {"load_module_strict": False}


def setup_for(train: Any, world: int | None = None) -> ProcessSetup:
    """The set-up a run's ``train`` section asks for, at this world size (the launcher's, by default)."""
    if train.zero_stage is not None or train.deepspeed_config:
        return DeepSpeedZero(train, world)
    return TorchProcesses(train, world)


def zero3_gathered(accelerator: Any, params: list[torch.nn.Parameter]) -> ContextManager[Any]:
    """``params`` whole on every process inside the context when the run partitions them (ZeRO-3); else nothing."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return contextlib.nullcontext()
    if accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"].get("stage", 0) != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


@contextlib.contextmanager
def deepspeed_for_this_run() -> Any:
    """`world_of_one`; afterwards, the switches that turn DeepSpeed on for the whole process are put back as they
    were: accelerate's ``ACCELERATE_USE_DEEPSPEED`` (set by an Accelerator given a DeepSpeed plugin) and the ZeRO-3
    config transformers builds models under. A later run of the same process (the next cell of a serial grid)
    without ``train.zero_stage`` then trains without DeepSpeed."""
    from transformers.integrations import unset_hf_deepspeed_config

    before = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    try:
        with world_of_one():
            yield
    finally:
        unset_hf_deepspeed_config()
        if before is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = before


@contextlib.contextmanager
def world_of_one() -> Any:
    """Without a launcher, the environment DeepSpeed reads for a world of one, on a port free on this machine.

    DeepSpeed looks for MPI (``mpi4py``) when RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are not all
    set. A launched process has them and keeps them; two plain processes on one machine each get their
    own port. The variables are removed again afterwards, so that a later run of the same process (the
    next grid cell) is not taken for a launched one.
    """
    if "WORLD_SIZE" in os.environ and "MASTER_PORT" in os.environ:
        yield
        return
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"), "MASTER_PORT": str(free_port())})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keep_units_whole(accelerator: Any, largest_unit: int) -> None:
    """Under ZeRO-3, raise the persistence threshold so that no rank unit is partitioned (before prepare)."""
    zero = accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]
    threshold = zero.get("stage3_param_persistence_threshold", "auto")
    if threshold == "auto" or int(threshold) < largest_unit:
        zero["stage3_param_persistence_threshold"] = int(largest_unit)


def cast_unpartitioned(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Under ZeRO-3 in bf16: the parameters zero.Init did not create (the adapters, added after the model was built;
    every parameter with ``train.zero3_init: false``) cast in place to ``dtype``, as DeepSpeed casts the whole
    module under ZeRO 0-2. ZeRO-3 flattens each process's parameters into one buffer of one dtype (it refuses a
    mix) and keeps the fp32 masters in its optimizer itself."""
    for param in model.parameters():
        if not hasattr(param, "ds_id") and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def make_units_whole(unit_params: list[torch.nn.Parameter]) -> None:
    """After deepspeed.initialize under ZeRO-3: every rank unit gathered and kept whole (`triadapt.zero3`)."""
    from triadapt.errors import TriAdaptError
    from triadapt.zero3 import make_units_whole as gather_units

    try:
        gather_units(unit_params, where="train.deepspeed_config")
    except TriAdaptError as exc:
        raise RunnerError(str(exc)) from None


@contextlib.contextmanager
def _built_whole(plugin: Any) -> Any:
    """transformers builds under zero.Init whenever a ZeRO-3 DeepSpeed config is registered: unregister it meanwhile."""
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


# DeepSpeed's CPU all-reduce maps a 66 MB file per process in /dev/shm and never removes it; the runner removes its
# process's own when the process exits (a machine would otherwise fill up run by run).
_SHM_RELEASE: set[str] = set()  # the files registered for removal (one per port a run of this process used)


def _release_shm_buffer_at_exit() -> None:
    """Register this run's all-reduce file for removal at exit, by the name it has now (its port)."""
    import atexit

    name = shm_buffer_name()
    if name not in _SHM_RELEASE:
        _SHM_RELEASE.add(name)
        atexit.register(unlink_shm_buffer, name)


def shm_buffer_name(rank: int | str | None = None) -> str:
    """The /dev/shm file DeepSpeed's CPU all-reduce creates for a process (named by DeepSpeed's shm.cpp)."""
    rank = os.environ.get("RANK", "0") if rank is None else rank
    return (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '(null)')}_"
            f"{os.environ.get('MASTER_PORT', '(null)')}_{rank}")


def unlink_shm_buffer(name: str | None = None) -> None:
    """Remove an all-reduce file (default: this process's now); processes that mapped it keep their mapping."""
    from pathlib import Path

    with contextlib.suppress(OSError):
        (Path("/dev/shm") / (name or shm_buffer_name())).unlink()
