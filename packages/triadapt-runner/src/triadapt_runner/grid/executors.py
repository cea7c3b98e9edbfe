"""How a grid's cells are executed, behind one small interface: `CellExecutor`.

An executor starts a cell, reports the outcomes of cells that ended, and cancels what runs. The
grid's order, its selection protocol and resuming live once, in `triadapt_runner.grid.schedule`;
executors only run cells:

* `SerialExecutor` trains each cell in this process (every process of a launched multi-process
  grid runs the same cells in the same order, the main one with the tracker);
* `triadapt_runner.grid.workers.LocalProcesses` trains up to ``--jobs`` cells at once in worker
  processes of this machine;
* `triadapt_runner.grid.ray_tasks.RayTasks` trains them as Ray tasks, on a Ray cluster or a local Ray
  instance.
"""

from __future__ import annotations

import signal
import threading
from abc import ABC, abstractmethod
from typing import Any

from triadapt_runner.grid.cells import CellOutcome, run_cell
from triadapt_runner.grid.spec import Cell


class CellExecutor(ABC):
    """Runs cells; the scheduler decides which and when."""

    @abstractmethod
    def can_start(self, cell: Cell) -> bool:
        """Whether ``cell`` can start now (a free slot, free devices)."""

    @abstractmethod
    def start(self, cell: Cell, extra_tags: dict[str, str] | None) -> None:
        """Start ``cell`` (as a child run of the grid's parent, tagged with ``extra_tags``)."""

    @abstractmethod
    def wait(self) -> list[CellOutcome]:
        """Block until at least one started cell has ended; their outcomes (a crashed cell: ``failed``)."""

    @property
    @abstractmethod
    def running(self) -> int:
        """Cells started and not yet reported."""

    def cancel(self) -> None:
        """Stop every running cell (an interrupt); their open runs are marked KILLED on resume."""

    def close(self) -> None:
        """Release the executor's resources once the grid has ended."""


class SerialExecutor(CellExecutor):
    """One cell at a time, in this process."""

    def __init__(self, tracker: Any, parent_id: str, grid: str, *, progress: bool, checkpoint_root: Any):
        self.tracker, self.parent_id, self.grid = tracker, parent_id, grid
        self.progress, self.checkpoint_root = progress, checkpoint_root
        self._next: tuple[Cell, dict[str, str] | None] | None = None
        self.previous = terminate_as_interrupt()  # a SIGTERM marks the running cell KILLED, as Ctrl-C does

    def can_start(self, cell: Cell) -> bool:
        return self._next is None

    def start(self, cell: Cell, extra_tags: dict[str, str] | None) -> None:
        self._next = (cell, extra_tags)

    def wait(self) -> list[CellOutcome]:
        assert self._next is not None, "wait() with no cell started"
        (cell, extra_tags), self._next = self._next, None
        return [run_cell(self.tracker, cell, self.parent_id, self.grid, progress=self.progress,
                         checkpoint_root=self.checkpoint_root, extra_tags=extra_tags)]

    @property
    def running(self) -> int:
        return int(self._next is not None)

    def cancel(self) -> None:
        self.previous = restore_terminate(self.previous)

    def close(self) -> None:
        self.previous = restore_terminate(self.previous)


def terminate_as_interrupt() -> Any:
    """SIGTERM (`kill`, `timeout`, a scheduler) ends the grid as Ctrl-C does, workers included; the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def restore_terminate(previous: Any) -> None:
    """Put back the SIGTERM handler `terminate_as_interrupt` replaced (None: nothing was replaced); returns None."""
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
    return None


_trackers: dict[tuple[str, str], Any] = {}  # one per worker process and store


def run_cell_with_own_tracker(cell: Cell, *, uri: str, experiment: str, parent_id: str, grid: str,
                              checkpoint_root: Any, extra_tags: dict[str, str] | None) -> Any:
    """A cell in a worker process (of ``--jobs`` or Ray): the process's own tracker on the grid's store."""
    from triadapt_runner.tracking.runs import Tracker

    tracker = _trackers.get((uri, experiment)) or _trackers.setdefault((uri, experiment), Tracker(uri, experiment))
    return run_cell(tracker, cell, parent_id, grid, progress=False, checkpoint_root=checkpoint_root,
                    extra_tags=extra_tags)
