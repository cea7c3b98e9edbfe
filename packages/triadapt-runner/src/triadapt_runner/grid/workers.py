"""`triadapt ablate --jobs N`: up to N cells of a grid at once, each in a worker process (`LocalProcesses`).

Which cell starts when is the grid's schedule (`triadapt_runner.grid.schedule`), as for a serial run. Every
worker opens its own tracker on the same store and logs its cells as the serial runner does, so
the MLflow layout, resuming and ``triadapt compare`` do not depend on ``--jobs``. The workers
share the machine without oversubscribing it: each cell holds its CPU threads and its own GPUs
(`triadapt_runner.grid.placement`).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from triadapt_runner.grid.cells import CellOutcome
from triadapt_runner.grid.executors import (CellExecutor, restore_terminate, run_cell_with_own_tracker,
                                             terminate_as_interrupt)
from triadapt_runner.grid.placement import Devices, Placement
from triadapt_runner.grid.spec import Cell


class LocalProcesses(CellExecutor):
    """Up to ``jobs`` cells at once, each in a spawned worker process of this machine.

    Each cell holds its CPU threads (the cores split evenly between the jobs) and, on a GPU machine, its
    own GPUs (`triadapt_runner.grid.placement`): ``train.num_processes`` of them, or a share of one with
    ``gpus_per_cell`` < 1. A cell starts only when they are free. Without GPUs the workers are a pool that
    lives as long as the grid; with GPUs each cell has a process of its own, started with its
    ``CUDA_VISIBLE_DEVICES``. A cell whose process dies counts as failed. SIGTERM (while the grid runs)
    ends the grid as Ctrl-C does; `cancel` kills the workers (SIGKILL: a library's SIGTERM handler cannot
    keep one training).
    """

    def __init__(self, jobs: int, *, tracker: Any, parent_id: str, grid: str, checkpoint_root: Any,
                 devices: Devices | None = None):
        self.jobs, self.devices = jobs, devices or Devices.of_this_machine()
        self.threads = self.devices.threads_per_cell(jobs)
        self.context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or MLflow state
        self.shared = None if self.devices.gpus else self._pool(jobs, {})
        self.worker = dict(uri=tracker.uri, experiment=tracker.experiment, parent_id=parent_id, grid=grid,
                           checkpoint_root=checkpoint_root)
        self.futures: dict[Future, tuple[Cell, Placement, ProcessPoolExecutor]] = {}
        self.reserved: dict[str, Placement] = {}
        self.previous = terminate_as_interrupt()

    def _pool(self, workers: int, environment: dict[str, str]) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=self.context, initializer=_start_process,
                                   initargs=(self.threads, environment))

    def can_start(self, cell: Cell) -> bool:
        if cell.id in self.reserved:
            return True
        if len(self.futures) + len(self.reserved) >= self.jobs:
            return False
        placement = self.devices.take(cell.config.train.num_processes, self.threads)
        if placement is not None:
            self.reserved[cell.id] = placement
        return placement is not None

    def start(self, cell: Cell, extra_tags: dict[str, str] | None) -> None:
        placement = self.reserved.pop(cell.id, None) or self.devices.take(cell.config.train.num_processes,
                                                                          self.threads)
        assert placement is not None, "start() without free devices"
        pool = self.shared or self._pool(1, placement.environment())
        self.futures[pool.submit(run_cell_with_own_tracker, cell, extra_tags=extra_tags, **self.worker)] = (cell, placement, pool)

    def wait(self) -> list[CellOutcome]:
        finished, _ = wait(self.futures, return_when=FIRST_COMPLETED)
        outcomes = []
        for future in finished:
            cell, placement, pool = self.futures.pop(future)
            outcomes.append(_outcome(future, cell))
            self.devices.give_back(placement)
            if pool is not self.shared:
                pool.shutdown(wait=False)
        return outcomes

    @property
    def running(self) -> int:
        return len(self.futures)

    def cancel(self) -> None:
        pools = {id(p): p for _, _, p in self.futures.values()}
        if self.shared is not None:
            pools[id(self.shared)] = self.shared
        for pool in pools.values():  # each once: a pool that is shut down has no processes left to list
            _stop(pool)
        self.previous = restore_terminate(self.previous)

    def close(self) -> None:
        self.previous = restore_terminate(self.previous)
        if self.shared is not None:
            self.shared.shutdown(wait=True)


def _outcome(future: Future, cell: Cell) -> Any:
    try:
        return future.result()
    except Exception as exc:  # the process died (killed, out of memory) before returning
        return CellOutcome(cell, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the running workers (SIGKILL: a library's SIGTERM handler cannot keep one training), then cancel what
    has not started; their open runs are marked KILLED on resume."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle before 3.14
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _start_process(threads: int, environment: dict[str, str]) -> None:
    """A worker's set-up: its devices (before anything touches CUDA), threads and quiet libraries."""
    os.environ.update(environment)
    import torch

    from triadapt_runner.console import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()
