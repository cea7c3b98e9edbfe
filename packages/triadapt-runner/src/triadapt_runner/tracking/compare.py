"""Paper-style comparison tables from MLflow: methods × tasks, mean ± std (n) and an average.

Only FINISHED cell runs count. Within one (method, task) cell of the table every run must
share one config (apart from the seed) and seeds must not repeat: otherwise the table
would silently average different things, so it is refused. With baseline rows, every row gets
its difference to each of them per task, with a 95 % CI and a p-value (`significance`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from triadapt_runner.tasks.registry import DEFAULT_KIND, KINDS, TaskKind, reported_metrics, resolve_metric, task_kind
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.tracking.significance import Difference, difference
from triadapt_runner.tracking.runs import FINISHED, TAG_PREFIX, Tracker

T = TAG_PREFIX
# what a run measures about itself (not a task metric): tables of these show raw values, and rows without them
# (full fine-tuning has no ranks) are left out
RUN_METRICS = ("rank_use", "capacity_hits", "capacity_first_step", "trained_parameters", "median_step_s")


@dataclass
class Stat:
    values: list[float]
    seeds: list[int] | None = None

    @property
    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds or range(len(self.values)), self.values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation; undefined (None) for a single value."""
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        if self.std is None:
            return f"{self.mean * scale:.{digits}f} (n=1)"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f} (n={self.n})"


@dataclass
class Table:
    methods: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Stat]
    metric: str
    baselines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what was left out and why (`collect_runs`), below the Markdown and terminal tables
    data_kinds: dict[str, str] = field(default_factory=dict)  # task -> data.kind of its runs (custom data)

    def kind(self, task: str) -> TaskKind:
        """The task kind of a column: it decides the main metric and how the scores are shown."""
        return task_kind(task, self.data_kinds.get(task, DEFAULT_KIND))

    def metric_name(self, task: str) -> str:
        """The metric shown for ``task`` (``main``: its main metric; custom data: its kind's)."""
        if self.metric in RUN_METRICS:
            return self.metric
        return resolve_metric(self.metric, task, self.data_kinds.get(task, DEFAULT_KIND))

    def scale(self, task: str) -> float:
        """Fractions (accuracy, F1, correlations) in per cent; what the task kind shows raw (QA scores, already per
        cent; losses, perplexities) and run metrics as they are."""
        raw = self.metric in RUN_METRICS or self.kind(task).raw_scores
        return 1.0 if raw else 100.0

    def digits(self, task: str) -> int:
        """Decimals shown: the task kind's (four for a causal-LM task's loss and perplexity, values near 1 whose
        differences lie in the third decimal); two for run metrics."""
        return 2 if self.metric in RUN_METRICS else self.kind(task).decimals

    def difference(self, method: str, task: str, baseline: str | None = None) -> Difference | None:
        """``method`` against a baseline row (default: the first) on ``task`` (None for that row itself, a missing
        cell or a table without baselines)."""
        baseline = baseline or (self.baselines[0] if self.baselines else None)
        if baseline is None or method == baseline:
            return None
        row, base = self.cells.get((method, task)), self.cells.get((baseline, task))
        return difference(row.by_seed, base.by_seed) if row and base else None

    def average(self, method: str) -> float | None:
        """Mean over the tasks of the values as shown (per cent where a task shows per cent)."""
        means = [self.cells[(method, t)].mean * self.scale(t) for t in self.tasks if (method, t) in self.cells]
        return statistics.fmean(means) if len(means) == len(self.tasks) else None

    def rows(self) -> list[list[str]]:
        out = []
        for method in self.methods:
            row = [method] + [self.cells[(method, t)].text(self.scale(t), self.digits(t))
                              if (method, t) in self.cells else "—" for t in self.tasks]
            avg = self.average(method)
            row.append(f"{avg:.{max(map(self.digits, self.tasks))}f}" if avg is not None else "—")
            for baseline in self.baselines:
                for task in self.tasks:
                    diff = self.difference(method, task, baseline)
                    row.append("baseline" if method == baseline else diff.text(self.scale(task), self.digits(task))
                               if diff else "—")
            out.append(row)
        return out

    def header(self) -> list[str]:
        head = ["method"] + [f"{t} ({self.metric_name(t)})" for t in self.tasks] + ["average"]
        head += [f"{t}: Δ vs {b} [95% CI] p" for b in self.baselines for t in self.tasks]
        return head

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows()]
        return "\n".join(lines) + "\n" + "".join(f"\nNote: {note}\n" for note in self.notes)

    def terminal(self) -> str:
        table = [self.header()] + self.rows()
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table) + "\n" + \
            "".join(f"note: {note}\n" for note in self.notes)

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        head = ["method", "task", "metric", "mean", "std", "n", "median"]
        if self.baselines:  # one line per cell and baseline
            head += ["baseline", "diff", "ci_low", "ci_high", "p_value", "test", "test_n"]
        writer.writerow(head)
        for (method, task), stat in sorted(self.cells.items()):
            std = "" if stat.std is None else f"{stat.std:.6f}"
            line = [method, task, self.metric_name(task), f"{stat.mean:.6f}", std, stat.n,
                    f"{stat.median:.6f}"]
            if not self.baselines:
                writer.writerow(line)
            for baseline in self.baselines:
                d = self.difference(method, task, baseline)
                writer.writerow(line + [baseline] + (["", "", "", "", "", ""] if d is None else [
                    f"{d.diff:.6f}", _num(d.ci_low), _num(d.ci_high), _num(d.p_value), d.test, d.n]))
        return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def data_kind(run: Any) -> str:
    """The data.kind a run was logged with (its params), which names the kind of custom data."""
    value = run.data.params.get("data.kind", DEFAULT_KIND)
    return value if value in KINDS else DEFAULT_KIND


def check_metric(metric: str, runs: list[Any]) -> None:
    """``metric`` is main, a metric the task kind of some run reports, or a run metric: a typo is named at once."""
    if metric == "main" or metric in RUN_METRICS or not runs:
        return
    known = sorted({m for run in runs for m in reported_metrics(run.data.tags[f"{T}task"], data_kind(run))})
    if metric not in known:
        raise invalid("metric", metric, f"use main, a metric of the runs' tasks ({', '.join(known)}) or a run "
                                        f"metric ({', '.join(RUN_METRICS)})")


def parent_of(tracker: Tracker, grid: str) -> str:
    """The run id of the latest grid named ``grid``."""
    parents = tracker.find_parents(grid)
    if not parents:
        raise RunnerError(f"grid={grid!r} is invalid: no grid of that name in experiment {tracker.experiment!r}")
    return parents[-1].info.run_id


def log_table(tracker: Tracker, parent_id: str, table: Table) -> list[str]:
    """The table as Markdown and CSV artifacts of the grid's parent run; returns their names."""
    stem = f"compare-{table.metric}" + "".join(f"-vs-{re.sub(r'[^A-Za-z0-9._-]+', '_', b)}" for b in table.baselines)
    names = [f"{stem}.md", f"{stem}.csv"]
    for name, text in zip(names, (table.markdown(), table.csv())):
        tracker.log_text(parent_id, name, text)
    return names


def collect_runs(tracker: Tracker, *, parent_id: str | None = None, grid: str | None = None,
                 notes: list[str] | None = None) -> list[Any]:
    """The finished runs to compare; what is left out and why is appended to ``notes``."""
    if grid is not None:
        parent_id = parent_of(tracker, grid)
    if parent_id is not None:
        runs = tracker.children(parent_id)
        if not runs:
            raise RunnerError(f"parent={parent_id!r} is invalid: no child runs under it")
    else:
        runs = tracker.runs(f"tags.`{T}role` = 'cell'")
    # runs at a value a grid's selection did not choose are not part of the comparison
    finished = [r for r in runs if r.info.status == FINISHED and r.data.tags.get(f"{T}selection") != "rejected"]
    if parent_id is not None and any(f"{T}selection" in r.data.tags for r in runs):
        # a grid with a selection, stopped part-way: a row whose choice is still to come has runs without a verdict
        undecided = [r for r in finished if f"{T}selection" not in r.data.tags]
        if undecided and notes is not None:
            rows = sorted({f"{r.data.tags[f'{T}method']} ({r.data.tags[f'{T}task']})" for r in undecided})
            notes.append(f"left out until the grid has chosen their value: {', '.join(rows)} "
                         f"({len(undecided)} finished selection run{'s' if len(undecided) > 1 else ''})")
        finished = [r for r in finished if f"{T}selection" in r.data.tags]
        edges = edge_note(tracker, parent_id) if notes is not None else None
        if edges:
            notes.append(edges)
    device = device_note(finished)
    if device and notes is not None:
        notes.append(device)
    return finished


def edge_note(tracker: Tracker, parent_id: str) -> str | None:
    """One line naming the rows whose selection chose the largest or smallest value of a numeric axis
    (`selection.json` on the grid's parent run): their best value may lie outside the grid."""
    from triadapt_runner.grid.selection import BEYOND, edge

    if "selection.json" not in {a.path for a in tracker.client.list_artifacts(parent_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        report = json.loads(Path(tracker.client.download_artifacts(parent_id, "selection.json", tmp)).read_text())
    axis, values = report["select"]["axis"], report["select"]["values"]
    sides: dict[str, list[str]] = {}
    for row, entry in report["rows"].items():
        side = edge(values, entry.get("chosen"))
        if side:
            sides.setdefault(side, []).append(_row_label(row))
    if not sides:
        return None
    ends = {"top": ("largest", max(values)), "bottom": ("smallest", min(values))}
    parts = [f"the {ends[side][0]} ({ends[side][1]!r}; the best may lie {BEYOND[side]}): {', '.join(rows)}"
             for side, rows in sorted(sides.items(), key=lambda item: item[0] != "top")]
    return f"rows that chose an end of {axis}'s values: " + "; ".join(parts)


def _row_label(row: str) -> str:
    """A selection row (its axis values as JSON) as the table names it: method (task), or the values themselves."""
    try:
        keys = json.loads(row)
    except ValueError:
        return row
    if not isinstance(keys, dict) or "method" not in keys:
        return row
    return f"{keys['method']} ({keys['task']})" if "task" in keys else str(keys["method"])


def device_note(runs: list[Any]) -> str | None:
    """One line when ``runs`` trained on more than one device (tag ``triadapt.device``): the same cell gives other
    numbers on other hardware, so a reader should know which rows mix them."""
    counts: dict[str, int] = {}
    by_row: dict[str, set[str]] = {}
    for run in runs:
        tags = run.data.tags
        device = tags.get(f"{T}device", "not recorded")
        counts[device] = counts.get(device, 0) + 1
        by_row.setdefault(f"{tags.get(f'{T}method')} ({tags.get(f'{T}task')})", set()).add(device)
    if len(counts) < 2:
        return None
    mixed = sorted(row for row, devices in by_row.items() if len(devices) > 1)
    return (f"runs from {len(counts)} devices: "
            + "; ".join(f"{device} ({n})" for device, n in sorted(counts.items(), key=lambda item: -item[1]))
            + (f"; rows that mix them: {', '.join(mixed)}" if mixed else ""))


def build_table(runs: list[Any], metric: str = "main", baselines: Sequence[str] = ()) -> Table:
    """The table of ``runs``; each row is compared with every row named in ``baselines`` (in that order)."""
    check_metric(metric, runs)
    cells: dict[tuple[str, str], list[tuple[int, str, float]]] = {}
    data_kinds: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        method, task = tags[f"{T}method"], tags[f"{T}task"]
        data_kinds.setdefault(task, data_kind(run))
        key = metric if metric in RUN_METRICS else f"result_{resolve_metric(metric, task, data_kinds[task])}"
        if key not in run.data.metrics and metric in RUN_METRICS:
            continue
        if key not in run.data.metrics:
            raise RunnerError(f"metric={metric!r} is invalid for run {run.info.run_id} ({method}, {task}): it has "
                              f"{', '.join(sorted(k[7:] for k in run.data.metrics if k.startswith('result_')))}")
        cells.setdefault((method, task), []).append((int(tags[f"{T}seed"]), tags[f"{T}config_hash"],
                                                     run.data.metrics[key]))
    if not cells:
        raise RunnerError("no finished runs to compare")
    for (method, task), entries in cells.items():
        hashes = sorted({h for _, h, _ in entries})
        if len(hashes) > 1:
            raise RunnerError(f"method {method!r} on task {task!r} mixes configs {', '.join(hashes)}: give them "
                              f"different method labels or compare one grid at a time")
        seeds = [s for s, _, _ in entries]
        if len(set(seeds)) != len(seeds):
            duplicate = sorted({s for s in seeds if seeds.count(s) > 1})
            raise RunnerError(f"method {method!r} on task {task!r} has duplicate seeds {duplicate}: the same cell "
                              f"ran twice; compare one grid (--grid / --parent) instead of the whole experiment")
    methods = list(dict.fromkeys(m for m, _ in cells))
    tasks = list(dict.fromkeys(t for _, t in cells))
    if isinstance(baselines, str):
        baselines = (baselines,)
    for baseline in baselines:
        if baseline not in methods:
            raise RunnerError(f"baseline={baseline!r} is invalid: the rows are {', '.join(repr(m) for m in methods)}")
    stats = {k: Stat([v for _, _, v in e], [s for s, _, _ in e]) for k, e in cells.items()}
    return Table(methods, tasks, stats, metric, tuple(dict.fromkeys(baselines)), data_kinds=data_kinds)
