"""`triadapt ablate --jobs N`: up to N cells of a grid at once, each in a worker process.

A cell starts as soon as it can: every cell of a grid without ``select`` at once; with
``select``, every row's selection cells at once, and a row's other seeds as soon as its own
selection cells are done and its value is chosen (by this process, as in a serial run). Every
worker opens its own tracker on the same store and logs its cells as the serial runner does, so
the MLflow layout, resuming and ``triadapt compare`` do not depend on ``--jobs``. The workers
share the machine: CPU threads are split between them, and on a GPU machine they share CUDA's default
device (the first visible GPU; with several, every worker still uses that one) as separate processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.cells import CellOutcome, outcome_line, run_cell
from triadapt_runner.grid.choosing import CHOSEN, apply_selection
from triadapt_runner.grid.spec import Cell, GridSpec
from triadapt_runner.distributed.launch import world_size


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise RunnerError(f"--jobs={jobs} is invalid: give the number of cells to run at once (1 or more)")
    if jobs > 1 and world_size() > 1:
        raise RunnerError(f"--jobs={jobs} is invalid under a multi-process launch (world size {world_size()}): "
                          f"each job is its own process; use --jobs 1 or a plain `triadapt ablate`")


def run_cells_in_processes(spec: GridSpec, jobs: int, *, tracker: Any, parent_id: str, done: dict[str, str],
                           fail_fast: bool, checkpoint_root: Any) -> list[Any]:
    """Run the grid's cells in a pool of ``jobs`` spawned processes; outcomes in the order they ended.

    With ``fail_fast`` nothing new starts after the first failed cell (running cells finish). A
    cell whose process dies counts as failed. On an interrupt (SIGINT, or SIGTERM while this runs) the workers are
    stopped with the grid.
    """
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or MLflow state
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_process,
                               initargs=(max(1, (os.cpu_count() or 1) // jobs),))
    worker = dict(uri=tracker.uri, experiment=tracker.experiment, parent_id=parent_id, grid=spec.name,
                  checkpoint_root=checkpoint_root)
    outcomes: list[Any] = []
    running: dict[Future, Cell] = {}
    selecting: dict[str, set[str]] = {}  # per row, its selection cells not ended yet
    for cell in spec.selection_cells() if spec.select else []:
        selecting.setdefault(cell.row, set()).add(cell.id)

    def start(cell: Cell, extra_tags: dict[str, str] | None = None) -> None:
        if cell.id in done:
            outcomes.append(CellOutcome(cell, "skipped", done[cell.id]))
            print(outcome_line(outcomes[-1]), flush=True)
            ended(cell)
        elif not (fail_fast and any(o.status == "failed" for o in outcomes)):
            running[pool.submit(_run_cell_here, cell, extra_tags=extra_tags, **worker)] = cell

    def ended(cell: Cell) -> None:  # the last selection cell of a row: choose, then its other seeds
        if cell.row in selecting and cell.id in selecting[cell.row]:
            selecting[cell.row].discard(cell.id)
            if not selecting[cell.row]:
                chosen = apply_selection(spec, tracker, parent_id, announce=cell.row)
                for final in spec.final_cells(chosen):
                    if final.row == cell.row:
                        start(final, CHOSEN)

    previous = _terminate_as_interrupt()
    try:
        for cell in spec.selection_cells() if spec.select else spec.cells():
            start(cell)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                cell = running.pop(future)
                outcomes.append(_outcome(future, cell))
                print(outcome_line(outcomes[-1]), flush=True)
                ended(cell)
    except BaseException:  # an interrupt: stop the workers too (a signal sent to this process alone misses them)
        _stop(pool)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown(wait=True)
    return outcomes


def _terminate_as_interrupt() -> Any:
    """SIGTERM (`kill`, `timeout`, a scheduler) ends the grid as Ctrl-C does, workers included; the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _outcome(future: Future, cell: Cell) -> Any:
    try:
        return future.result()
    except Exception as exc:  # the process died (killed, out of memory) before returning
        return CellOutcome(cell, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the running workers (SIGKILL: a library's SIGTERM handler cannot keep one training), then cancel what
    has not started; their open runs are marked KILLED on resume."""
    for process in list(getattr(pool, "_processes", {}).values()):  # no public handle before Python 3.14
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _start_process(threads: int) -> None:
    import torch

    from triadapt_runner.console import quiet_libraries

    torch.set_num_threads(threads)
    quiet_libraries()


_trackers: dict[tuple[str, str], Any] = {}  # one per worker process and store


def _run_cell_here(cell: Cell, *, uri: str, experiment: str, parent_id: str, grid: str, checkpoint_root: Any,
                   extra_tags: dict[str, str] | None) -> Any:
    from triadapt_runner.tracking.runs import Tracker

    tracker = _trackers.get((uri, experiment)) or _trackers.setdefault((uri, experiment), Tracker(uri, experiment))
    return run_cell(tracker, cell, parent_id, grid, progress=False, checkpoint_root=checkpoint_root,
                    extra_tags=extra_tags)
