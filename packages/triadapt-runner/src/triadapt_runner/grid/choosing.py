"""A grid's selection applied to its runs: each row's value chosen from its finished selection cells."""

from __future__ import annotations

from typing import Any

from triadapt_runner.grid.selection import choose
from triadapt_runner.grid.spec import GridSpec
from triadapt_runner.tracking.runs import FINISHED, TAG_PREFIX, Tracker

T = TAG_PREFIX

CHOSEN = {f"{T}selection": "chosen"}  # the tag of a row's cells at its chosen value, after its selection


def apply_selection(spec: GridSpec, tracker: Tracker, parent_id: str, announce: str) -> dict[str, Any]:
    """Choose each row's value from its finished selection runs; tag them; log ``selection.json`` on the parent.

    Every row with results is (re)chosen, so ``selection.json`` always covers the grid so far;
    the runs of the row ``announce`` are tagged and its choice is printed.
    """
    from triadapt_runner.tasks.specs import TASKS

    select = spec.select
    finished = {r.data.tags.get(f"{T}cell_id"): r for r in tracker.children(parent_id) if r.info.status == FINISHED}
    scores: dict[str, dict[Any, list[float]]] = {}
    for cell in spec.selection_cells():
        run = finished.get(cell.id)
        main = TASKS[cell.task].main_metric if cell.task in TASKS else "accuracy"
        key = f"result_{main if select.metric == 'main' else select.metric}"
        if run is not None and key in run.data.metrics:
            lower = cell.task in TASKS and TASKS[cell.task].lower_is_better and select.metric == "main"
            value = run.data.metrics[key]
            scores.setdefault(cell.row, {}).setdefault(cell.axes[select.axis], []).append(-value if lower else value)
    chosen = choose(select, scores)  # larger is better (a metric to minimise, such as perplexity, is negated)
    for cell in spec.selection_cells():  # earlier rows were tagged at their own turn
        if cell.row == announce and cell.id in finished and cell.row in chosen:
            verdict = "chosen" if cell.axes[select.axis] == chosen[cell.row] else "rejected"
            tracker.set_tag(finished[cell.id].info.run_id, f"{T}selection", verdict)
    report = {"select": select.to_dict(), "note": "scores of metrics to minimise (perplexity) are negated", "rows": {
        row: {"scores": {repr(v): sum(s) / len(s) for v, s in by_value.items()}, "chosen": chosen.get(row)}
        for row, by_value in scores.items()}}
    tracker.log_json(parent_id, "selection.json", report)
    for row, by_value in scores.items():
        if row != announce:
            continue
        listed = ", ".join(f"{v!r}: {sum(s) / len(s):.4f}" for v, s in by_value.items())
        print(f"selected {select.axis}={chosen.get(row)!r} for {row} ({listed})", flush=True)
    return chosen
