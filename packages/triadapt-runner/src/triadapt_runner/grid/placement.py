"""Which devices and CPU threads each cell of ``--jobs`` gets: no two cells share a GPU unless asked to.

A cell trains on ``train.num_processes`` GPUs of its own (``CUDA_VISIBLE_DEVICES`` of its process), or,
with ``--gpus-per-cell`` f < 1, on a share f of one GPU, so that 1/f small cells pack onto one card.
A cell starts only when its devices and its CPU threads are free; nothing is oversubscribed. On a
machine without GPUs only the threads are shared out. The GPU list is injectable, so the placement is
tested without GPUs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from triadapt_runner.distributed.launch import world_size
from triadapt_runner.errors import RunnerError

SHARE_STEPS = 1000  # GPU shares are counted in thousandths: 0.25 and 0.1 add up exactly


@dataclass
class Placement:
    """Where one cell runs: its GPUs (their indices on the machine; empty on CPU) and its CPU threads."""

    gpus: tuple[int | str, ...]
    threads: int
    share: int = SHARE_STEPS  # thousandths of each of its GPUs it holds

    def environment(self) -> dict[str, str]:
        """What the cell's process is started with (``CUDA_VISIBLE_DEVICES`` only where GPUs are placed)."""
        env = {"OMP_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        return env


@dataclass
class Devices:
    """The machine's GPUs and CPU threads, and what running cells hold of them."""

    gpus: list[int | str]  # as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)
    threads: int
    gpus_per_cell: float = 1.0
    free_share: dict[int | str, int] = field(init=False)
    free_threads: int = field(init=False)

    def __post_init__(self) -> None:
        check_gpus_per_cell(self.gpus_per_cell)
        self.free_share = {gpu: SHARE_STEPS for gpu in self.gpus}
        self.free_threads = self.threads

    @classmethod
    def of_this_machine(cls, gpus_per_cell: float = 1.0) -> Devices:
        """The visible CUDA devices (none without CUDA) and this process's CPU cores."""
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        # CUDA_VISIBLE_DEVICES may hold indices or UUIDs: passed on to the cells as written
        ids = [x.strip() for x in visible.split(",") if x.strip()] if visible else [str(i) for i in range(count)]
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cls(ids[:count], cores, gpus_per_cell)

    def threads_per_cell(self, jobs: int) -> int:
        return max(1, self.threads // jobs)

    def need(self, processes: int) -> tuple[int, int]:
        """(GPUs, thousandths of each) a cell of ``processes`` processes needs; (0, 0) on a CPU machine."""
        return gpu_need(processes, self.gpus_per_cell) if self.gpus else (0, 0)

    def check(self, processes: int) -> None:
        """Refuse a cell that could never start here (before anything starts)."""
        count, _ = self.need(processes)
        if count > len(self.gpus) and self.gpus:
            raise RunnerError(f"train.num_processes={processes} is invalid here: a cell needs {count} GPUs, this "
                              f"machine has {len(self.gpus)} visible")
        if not self.gpus and processes > self.threads:
            raise RunnerError(f"train.num_processes={processes} is invalid here: more processes than the "
                              f"{self.threads} CPU cores of this machine")

    def take(self, processes: int, threads: int) -> Placement | None:
        """Reserve devices and threads for a cell, or None if they are not free now."""
        count, share = self.need(processes)
        if threads > self.free_threads:
            return None
        candidates = [g for g in self.gpus if self.free_share[g] >= share]
        if count and share < SHARE_STEPS:  # pack: the fullest card that still fits
            candidates.sort(key=lambda g: self.free_share[g])
        if len(candidates) < count:
            return None
        chosen = tuple(sorted(candidates[:count]))
        for gpu in chosen:
            self.free_share[gpu] -= share
        self.free_threads -= threads
        return Placement(chosen, threads, share)

    def give_back(self, placement: Placement) -> None:
        for gpu in placement.gpus:
            self.free_share[gpu] += placement.share
        self.free_threads += placement.threads


def gpu_need(processes: int, gpus_per_cell: float) -> tuple[int, int]:
    """(GPUs, thousandths of each) a cell of ``processes`` processes needs where there are GPUs."""
    if gpus_per_cell < 1:
        if processes > 1:
            raise RunnerError(f"train.num_processes={processes} is invalid with --gpus-per-cell {gpus_per_cell}: a "
                              f"cell with several processes needs whole GPUs")
        return 1, round(gpus_per_cell * SHARE_STEPS)
    return processes * int(gpus_per_cell), SHARE_STEPS


def check_gpus_per_cell(value: float) -> None:
    """Whole GPUs (1, 2, ...) or a fraction 1/k of one whose shares add up exactly (0.5, 0.25, 0.2, 0.1, ...)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if number and value >= 1 and float(value).is_integer():
        return
    k = round(1 / value) if number else 0
    if number and value < 1 and abs(value * k - 1) < 1e-9 and SHARE_STEPS % k == 0:
        return
    raise RunnerError(f"--gpus-per-cell={value} is invalid: use a whole number of GPUs (1, 2, ...) or a fraction 1/k "
                      f"of one (0.5, 0.25, 0.2, 0.1, ...)")


def check_jobs(jobs: int | None, backend: str = "local") -> None:
    """``--jobs`` (None: not given) and ``--backend``, before anything starts."""
    if jobs is not None and jobs < 1:
        raise RunnerError(f"--jobs={jobs} is invalid: give the number of cells to run at once (1 or more)")
    if world_size() > 1 and ((jobs or 1) > 1 or backend != "local"):
        what = f"--jobs={jobs}" if backend == "local" else f"--backend={backend}"
        raise RunnerError(f"{what} is invalid under a multi-process launch (world size {world_size()}): "
                          f"the runner starts each cell's processes itself; use a plain `triadapt ablate`")
