"""Choosing one axis per row on validation, the same protocol for every row (e.g. the learning rate).

    select:
      axis: train.learning_rate       # any run-config key that is not an axis
      values: [1.0e-4, 5.0e-4, 2.5e-3]
      seeds: [0]                      # the seeds that choose (a subset of the grid's seeds)
      metric: main                    # each task's main validation metric, or a metric every row reports

A *row* is one combination of the grid's axes (method, task, …). For every row the grid first
trains the selection seeds at every value, then chooses the value with the best mean
validation metric over those seeds (ties: the first value listed), and trains the remaining
seeds at the chosen value only. "Best" is the metric's direction by the task kind: loss and
perplexity are minimised, every other metric maximised. The metric is checked when the grid is
read (`check_metric`): a name no row reports would leave every row without a choice. The
chosen value and every score are logged on the parent run (``selection.json``); the runs of
values not chosen are tagged ``triadapt.selection=rejected`` and left out of ``compare``.
A row that chose the largest or smallest value of a numeric axis (`edge`) is said so, when
it is chosen and below ``compare``'s table: its best value may lie outside the grid.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from triadapt_runner.errors import RunnerError

KEYS = ("axis", "values", "seeds", "metric")


@dataclass(frozen=True)
class Selection:
    axis: str
    values: tuple[Any, ...]
    seeds: tuple[int, ...]
    metric: str = "main"

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "values": list(self.values), "seeds": list(self.seeds), "metric": self.metric}


def parse_selection(source: str, data: Any, seeds: list[int], axis_keys: set[str], valid: set[str]) -> Selection:
    if not isinstance(data, dict) or set(data) - set(KEYS) or not {"axis", "values"} <= set(data):
        raise RunnerError(f"{source}: select={data!r} is invalid: a mapping with axis, values and optionally seeds "
                          f"and metric")
    axis, values = data["axis"], data["values"]
    if axis not in valid or axis == "train.seed":
        raise RunnerError(f"{source}: select.axis={axis!r} is invalid: not a run config key (e.g. train.learning_rate)")
    if axis in axis_keys:
        raise RunnerError(f"{source}: select.axis={axis!r} is invalid: it is also an axis; list its values under "
                          f"select.values only")
    if not isinstance(values, list) or len(values) < 2:
        raise RunnerError(f"{source}: select.values={values!r} is invalid: give a list of at least two values")
    chosen_by = data.get("seeds", seeds[:1])
    if not isinstance(chosen_by, list) or not chosen_by or not set(chosen_by) <= set(seeds):
        raise RunnerError(f"{source}: select.seeds={chosen_by!r} is invalid: a non-empty subset of seeds {seeds}")
    metric = data.get("metric", "main")
    if not isinstance(metric, str) or not metric:
        raise RunnerError(f"{source}: select.metric={metric!r} is invalid: 'main' or a metric name")
    return Selection(axis, tuple(values), tuple(chosen_by), metric)


def check_metric(source: str, selection: Selection, cells: list[Any]) -> None:
    """``select.metric`` is ``main`` or a metric the task of every row reports (the grid's resolved ``cells``)."""
    from triadapt_runner.tasks.registry import reported_metrics
    from triadapt_runner.tasks.specs import TASKS

    metric = selection.metric
    if metric == "main":
        return
    reported = {}  # task (custom data: with its kind) -> the metrics its runs report
    for data in (cell.config.data for cell in cells):
        task = data.task if data.task in TASKS else f"{data.task} (data.kind {data.kind})"
        reported[task] = reported_metrics(data.task, data.kind)
    common = [m for m in next(iter(reported.values()), ()) if all(m in r for r in reported.values())]
    if metric in common:
        return
    without = [task for task, metrics in reported.items() if metric not in metrics]
    valid = f"use main or a metric every row reports ({', '.join(common)})" if common else \
        "use main (the rows' tasks report no metric in common)"
    if len(without) < len(reported):
        valid += f"; task {without[0]!r} reports {', '.join(reported[without[0]])}"
    raise RunnerError(f"{source}: select.metric={metric!r} is invalid: {valid}")


def choose(selection: Selection, scores: dict[str, dict[Any, list[float]]]) -> dict[str, Any]:
    """The chosen value per row from ``{row: {value: [scores of the selection seeds]}}`` (rows without scores: none)."""
    chosen = {}
    for row, by_value in scores.items():
        means = [(statistics.fmean(v), -index, value) for index, value in enumerate(selection.values)
                 if (v := by_value.get(value))]
        if means:
            chosen[row] = max(means)[2]
    return chosen


BEYOND = {"top": "above", "bottom": "below"}  # where the best value may lie when the choice is at that end


def edge(values: Sequence[Any], chosen: Any) -> str | None:
    """``"top"`` / ``"bottom"`` when ``chosen`` is the largest / smallest of ``values``, all numbers: the best value
    may lie beyond the grid. None for an inner value, or an axis that is not numeric."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < 2 or len(numbers) != len(values) or isinstance(chosen, bool) or chosen not in numbers:
        return None
    return "top" if chosen == max(numbers) else "bottom" if chosen == min(numbers) else None
