"""The order of a grid's cells and its selection protocol, once for every executor.

Cells wait in one queue, in grid order, and start as soon as the executor can take them. With
``select``, the queue first holds every row's selection cells; when a row's last selection cell
has ended, its value is chosen (on the main process, shared with the others) and the row's other
seeds go to the front of the queue. One cell at a time this runs a grid row by row (a grid
stopped part-way leaves whole rows: every seed); with several at once, a row's other seeds start
as soon as its own selection is done. Cells that finished earlier are skipped (resume).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from tqdm.auto import tqdm

from triadapt_runner.distributed.processes import main_only
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.cells import CellOutcome, outcome_line
from triadapt_runner.grid.choosing import CHOSEN, apply_selection
from triadapt_runner.grid.executors import CellExecutor
from triadapt_runner.grid.spec import Cell, GridSpec


def run_scheduled(spec: GridSpec, executor: CellExecutor, *, tracker: Any, parent_id: str, done: dict[str, str],
                  fail_fast: bool, progress: bool) -> list[CellOutcome]:
    """Run the grid's cells on ``executor``; outcomes in the order they ended.

    With ``fail_fast`` nothing new starts after the first failed cell (running cells finish). On
    an interrupt the executor's running cells are cancelled and the interrupt goes on.
    """
    main = tracker is not None
    say: Callable[[str], None] = (lambda line: print(line, flush=True)) if main else (lambda line: None)
    queue: deque[tuple[Cell, dict[str, str] | None]] = deque(
        (cell, None) for cell in (spec.selection_cells() if spec.select else spec.cells()))
    selecting: dict[str, set[str]] = {}  # per row, its selection cells not ended yet
    for cell in spec.selection_cells() if spec.select else []:
        selecting.setdefault(cell.row, set()).add(cell.id)
    outcomes: list[CellOutcome] = []
    bar = tqdm(desc=f"grid {spec.name}", disable=not (progress and main), unit="cell")

    def ended(outcome: CellOutcome) -> None:
        outcomes.append(outcome)
        bar.update(1)
        say(outcome_line(outcome))
        cell = outcome.cell
        if cell.id not in selecting.get(cell.row, ()) or stopped():  # fail-fast: nothing more is chosen or started
            return
        selecting[cell.row].discard(cell.id)
        if not selecting[cell.row]:  # the row's last selection cell: choose, then its other seeds come first
            chosen = main_only(lambda: apply_selection(spec, tracker, parent_id, announce=cell.row))
            finals = [c for c in spec.final_cells(chosen) if c.row == cell.row]
            queue.extendleft((c, CHOSEN) for c in reversed(finals))

    def stopped() -> bool:
        return fail_fast and any(o.status == "failed" for o in outcomes)

    try:
        while True:
            while queue and not stopped():
                cell, tags = queue[0]
                if cell.id in done:
                    queue.popleft()
                    ended(CellOutcome(cell, "skipped", done[cell.id]))
                    continue
                if not executor.can_start(cell):
                    break
                queue.popleft()
                executor.start(cell, tags)
            if not executor.running:
                if queue and not stopped():  # the next cell can never start: its devices do not exist here
                    raise RunnerError(f"cell {queue[0][0].id} ({queue[0][0].method}) cannot start: it needs more "
                                      f"devices than this machine has free with nothing running")
                break
            for outcome in executor.wait():
                ended(outcome)
    except BaseException:  # an interrupt: stop what runs (a signal sent to this process alone misses workers)
        executor.cancel()
        raise
    finally:
        bar.close()
    executor.close()
    return outcomes
