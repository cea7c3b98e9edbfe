"""The process group of a launched command, decisions taken on the main process, values gathered from all.

How a run trains over its processes (one process, DDP, DeepSpeed) is `triadapt_runner.distributed.setup`.
"""

from __future__ import annotations

from typing import Any

import torch

from triadapt_runner.distributed.launch import is_main_process, world_size
from triadapt_runner.errors import RunnerError


def gather(accelerator: Any, value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if accelerator.num_processes == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(out, value)
    return out


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
