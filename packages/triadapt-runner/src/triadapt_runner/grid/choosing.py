"""A grid's selection applied to its runs: each row's value chosen from its finished selection cells."""

from __future__ import annotations

from typing import Any

from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.selection import BEYOND, choose, edge
from triadapt_runner.grid.spec import GridSpec
from triadapt_runner.tracking.runs import FINISHED, TAG_PREFIX, Tracker

T = TAG_PREFIX

CHOSEN = {f"{T}selection": "chosen"}  # the tag of a row's cells at its chosen value, after its selection


def apply_selection(spec: GridSpec, tracker: Tracker, parent_id: str, announce: str) -> dict[str, Any]:
    """Choose each row's value from its finished selection runs; tag them; log ``selection.json`` on the parent.

    Every row with results is (re)chosen, so ``selection.json`` always covers the grid so far;
    the runs of the row ``announce`` are tagged and its choice is printed. The direction of the
    metric is its task kind's (loss and perplexity are minimised). A row whose selection runs
    all finished without the metric cannot choose: that is an error, not a grid that ends done.
    """
    from triadapt_runner.tasks.registry import kind_of, resolve_metric

    select = spec.select
    finished = {r.data.tags.get(f"{T}cell_id"): r for r in tracker.children(parent_id) if r.info.status == FINISHED}
    scores: dict[str, dict[Any, list[float]]] = {}
    waiting: set[str] = set()  # rows with a selection cell not finished (yet, or it failed)
    for cell in spec.selection_cells():
        run = finished.get(cell.id)
        data = cell.config.data
        metric = resolve_metric(select.metric, data.task, data.kind)
        key = f"result_{metric}"
        if run is None:
            waiting.add(cell.row)
        elif key in run.data.metrics:
            value = run.data.metrics[key]
            sign = -1.0 if kind_of(data).lower_is_better(metric) else 1.0
            scores.setdefault(cell.row, {}).setdefault(cell.axes[select.axis], []).append(sign * value)
    _check_every_finished_row_has_scores(spec, finished, scores, waiting)
    chosen = choose(select, scores)  # larger is better (a metric to minimise, such as perplexity, is negated)
    for cell in spec.selection_cells():  # earlier rows were tagged at their own turn
        if cell.row == announce and cell.id in finished and cell.row in chosen:
            verdict = "chosen" if cell.axes[select.axis] == chosen[cell.row] else "rejected"
            tracker.set_tag(finished[cell.id].info.run_id, f"{T}selection", verdict)
    rows = {row: {"scores": {repr(v): sum(s) / len(s) for v, s in by_value.items()}, "chosen": chosen.get(row)}
            for row, by_value in scores.items()}
    report = {"select": select.to_dict(), "note": "scores of metrics to minimise (loss, perplexity) are negated",
              "rows": rows}
    tracker.log_json(parent_id, "selection.json", report)
    for row, by_value in scores.items():
        if row != announce:
            continue
        listed = ", ".join(f"{v!r}: {sum(s) / len(s):.4f}" for v, s in by_value.items())
        side = edge(select.values, chosen.get(row))
        beyond = f"; the {side} of select.values: the best value may lie {BEYOND[side]} it" if side else ""
        print(f"selected {select.axis}={chosen.get(row)!r} for {row} ({listed}{beyond})", flush=True)
    return chosen


def _check_every_finished_row_has_scores(spec: GridSpec, finished: dict[str, Any],
                                         scores: dict[str, dict[Any, list[float]]], waiting: set[str]) -> None:
    """Refuse a row whose selection runs all finished but none has the metric: it could never choose."""
    for cell in spec.selection_cells():
        if cell.row in scores or cell.row in waiting:
            continue
        metrics = sorted(k[len("result_"):] for k in finished[cell.id].data.metrics if k.startswith("result_"))
        raise RunnerError(f"select.metric={spec.select.metric!r} is invalid for row {cell.row}: none of its finished "
                          f"selection runs reports it (they report {', '.join(metrics) or 'nothing'})")
