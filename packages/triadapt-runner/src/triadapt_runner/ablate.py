"""Run a grid (or one run) with MLflow tracking; resume interrupted grids.

Resume rules (USERS.md 11): a cell whose child run FINISHED is skipped; a FAILED cell, or
one left RUNNING by a killed process (marked KILLED now), is run again; a grid whose spec
changed since its parent run was created is refused unless ``force`` (which starts a new
parent run). A failing cell does not stop the grid unless ``fail_fast``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from triadapt_runner.distributed import main_only
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid import Cell, GridSpec
from triadapt_runner.preflight import preflight
from triadapt_runner.tracking import FAILED, FINISHED, KILLED, RUNNING, TAG_PREFIX, Tracker
from triadapt_runner.training import RunResult, train_run

T = TAG_PREFIX


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # finished | skipped | failed
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class GridOutcome:
    parent_id: str
    outcomes: list[CellOutcome]

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_cell(tracker: Tracker | None, cell: Cell, parent_id: str | None, grid: str | None, progress: bool = True,
             output_root: str | Path | None = None, checkpoint_root: str | Path | None = None,
             extra_tags: dict[str, str] | None = None) -> CellOutcome:
    """Train one cell as a child run; the run ends FINISHED or FAILED, never left open.

    Every process of a multi-process launch calls this; only the main process has a ``tracker``
    (the others pass None), so each cell is one MLflow run whatever the world size. With
    ``checkpoint_root`` the cell checkpoints to ``checkpoint_root/<cell id>`` and resumes from
    there; the checkpoints are removed once the cell has finished.
    """
    if tracker is None:
        return _run_cell_worker(cell, progress, output_root, checkpoint_root)
    from triadapt_runner.methods import method_for

    cfg = cell.config
    tags = {f"{T}cell_id": cell.id, f"{T}method": cfg.label, f"{T}task": cfg.data.task, f"{T}seed": str(cell.seed),
            f"{T}config_hash": cfg.config_hash(), f"{T}role": "cell", f"{T}model": cfg.model,
            f"{T}approach": cfg.approach}
    tags.update({f"{T}{key}": value for key, value in method_for(cfg).strategy_tags(cfg).items()})
    tags.update({f"{T}axis.{k}": str(v) for k, v in cell.axes.items()})
    tags.update(extra_tags or {})
    if grid:
        tags[f"{T}grid"] = grid
    run_id = tracker.start_run(f"{cfg.label}/{cfg.data.task}/seed{cell.seed}", tags, parent_id)
    try:
        tracker.log_params(run_id, cfg.to_dict())
        tracker.log_json(run_id, "resolved_config.json", cfg.to_dict())
        with tempfile.TemporaryDirectory(dir=output_root) as tmp:
            result = train_run(cfg, tmp, log=lambda m, s: tracker.log_metrics(run_id, m, s), progress=progress,
                               checkpoint_dir=_checkpoints(checkpoint_root, cell))
            _log_result(tracker, run_id, result)
        _clear_checkpoints(checkpoint_root, cell)
    except BaseException as exc:
        tracker.set_tag(run_id, f"{T}error", f"{type(exc).__name__}: {exc}"[:4000])
        tracker.end_run(run_id, KILLED if isinstance(exc, KeyboardInterrupt) else FAILED)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return CellOutcome(cell, "failed", run_id, error=_one_line(exc))
    tracker.end_run(run_id, FINISHED)
    return CellOutcome(cell, "finished", run_id, metrics=result.metrics)


def _run_cell_worker(cell: Cell, progress: bool, output_root: str | Path | None,
                     checkpoint_root: str | Path | None) -> CellOutcome:
    """A non-main process: the same training, no tracking (its failure is reported by the main process)."""
    try:
        with tempfile.TemporaryDirectory(dir=output_root) as tmp:
            result = train_run(cell.config, tmp, progress=progress, checkpoint_dir=_checkpoints(checkpoint_root, cell))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return CellOutcome(cell, "failed", error=_one_line(exc))
    return CellOutcome(cell, "finished", metrics=result.metrics)


def _checkpoints(root: str | Path | None, cell: Cell) -> Path | None:
    return Path(root) / cell.id if root else None


def _clear_checkpoints(root: str | Path | None, cell: Cell) -> None:
    if root:
        shutil.rmtree(Path(root) / cell.id, ignore_errors=True)


def _log_result(tracker: Tracker, run_id: str, result: RunResult) -> None:
    tracker.set_tag(run_id, f"{T}world_size", str(result.world_size))
    if result.device:
        tracker.set_tag(run_id, f"{T}device", result.device)
    tracker.log_metrics(run_id, {f"result_{k}": v for k, v in result.metrics.items()}, result.total_steps)
    tracker.log_metrics(run_id, result.run_metrics, result.total_steps)  # rank use, capacity hits, parameters, time
    for key, value in result.protocol.items():
        tracker.set_tag(run_id, f"{T}protocol.{key}", str(value))
    if result.ranks:
        tracker.log_json(run_id, "final_ranks.json", result.ranks)
    out = result.output_dir
    for name in ("growth_events.json", "rank_trajectory.csv", "rank_heatmap.png", "eval_logits.json"):
        if (out / name).is_file():
            tracker.log_artifact(run_id, out / name)
    for path in sorted(out.glob("*-epoch*.json")):  # what a task kind keeps per evaluation (causal LM: generations)
        tracker.log_artifact(run_id, path, artifact_path="evaluations")
    if (out / "adapter").is_dir():  # adapter only, never base weights (full fine-tuning saves nothing)
        tracker.log_artifact(run_id, out / "adapter", artifact_path="adapter")


def run_grid(spec: GridSpec, tracker: Tracker | None, *, force: bool = False, fail_fast: bool = False,
             progress: bool = True, checkpoint_root: str | Path | None = None, jobs: int = 1) -> GridOutcome:
    """Run the grid's cells; under a multi-process launch every process calls this, the main one with the tracker.

    With ``select``, rows run one after another: a row's selection cells, the choice of its value
    from their results, then its other seeds at that value (`triadapt_runner.selection`). A grid
    stopped part-way thus leaves whole rows (every seed) rather than seed 0 of every row. With
    ``jobs`` > 1 (one process only), up to that many cells run at once, each as soon as it can
    (`triadapt_runner.parallel_cells`).
    """
    main = tracker is not None
    preflight(spec.cells(), spec.source)  # every cell checked before the parent run exists
    parent_id, done = main_only(lambda: _open_grid(spec, tracker, force))
    run = dict(tracker=tracker, parent_id=parent_id, done=done, spec=spec, fail_fast=fail_fast, progress=progress,
               checkpoint_root=checkpoint_root)
    if jobs > 1:
        from triadapt_runner.parallel_cells import run_cells_in_processes

        outcomes = run_cells_in_processes(spec, jobs, tracker=tracker, parent_id=parent_id, done=done,
                                          fail_fast=fail_fast, checkpoint_root=checkpoint_root)
    elif not spec.select:
        outcomes = _run_cells(spec.cells(), **run)
    else:
        outcomes = []
        for row, cells in itertools.groupby(spec.selection_cells(), key=lambda c: c.row):
            outcomes += _run_cells(list(cells), **run)
            if fail_fast and any(o.status == "failed" for o in outcomes):
                break
            chosen = main_only(lambda row=row: apply_selection(spec, tracker, parent_id, announce=row))
            outcomes += _run_cells([c for c in spec.final_cells(chosen) if c.row == row], **run,
                                   extra_tags=CHOSEN)
            if fail_fast and any(o.status == "failed" for o in outcomes):
                break
    if main:
        log_rank_figure(tracker, parent_id)
        tracker.end_run(parent_id, FAILED if any(o.status == "failed" for o in outcomes) else FINISHED)
    return GridOutcome(parent_id, outcomes)


CHOSEN = {f"{T}selection": "chosen"}  # the tag of a row's cells at its chosen value, after its selection


def _run_cells(cells: list[Cell], *, tracker: Tracker | None, parent_id: str, done: dict[str, str], spec: GridSpec,
               fail_fast: bool, progress: bool, checkpoint_root: Any,
               extra_tags: dict[str, str] | None = None) -> list[CellOutcome]:
    main, outcomes = tracker is not None, []
    bar = tqdm(cells, desc=f"grid {spec.name}", disable=not (progress and main), unit="cell")
    for cell in bar:
        if cell.id in done:
            outcomes.append(CellOutcome(cell, "skipped", done[cell.id]))
            _say(main, outcome_line(outcomes[-1]))
            continue
        outcome = run_cell(tracker, cell, parent_id, spec.name, progress=progress, checkpoint_root=checkpoint_root,
                           extra_tags=extra_tags)
        outcomes.append(outcome)
        _say(main, outcome_line(outcome))
        if outcome.status == "failed" and fail_fast:
            break
    return outcomes


def outcome_line(outcome: CellOutcome) -> str:
    cell = outcome.cell
    if outcome.status == "skipped":
        return f"{'skipped':<9}{cell.id} {cell.method} {cell.task} seed {cell.seed} (finished earlier)"
    detail = outcome.error if outcome.status == "failed" else _metrics_text(outcome.metrics)
    return f"{outcome.status:<9}{cell.id} {cell.method} {cell.task} seed {cell.seed}: {detail}"


def apply_selection(spec: GridSpec, tracker: Tracker, parent_id: str, announce: str) -> dict[str, Any]:
    """Choose each row's value from its finished selection runs; tag them; log ``selection.json`` on the parent.

    Every row with results is (re)chosen, so ``selection.json`` always covers the grid so far;
    the runs of the row ``announce`` are tagged and its choice is printed.
    """
    from triadapt_runner.data.tasks import TASKS
    from triadapt_runner.selection import choose

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


GROWING = ("triadapt", "increlora-style", "peft-adalora")


def log_rank_figure(tracker: Tracker, parent_id: str) -> str | None:
    """The paper's Figure 2 for the grid: final-rank heatmaps of every row whose ranks are allocated, side by side.

    One panel per row (method label), from its first task and lowest seed; logged on the parent run
    as ``rank_heatmaps.png``. Rows with fixed ranks (LoRA, full fine-tuning) have no panel.
    """
    from triadapt_runner.plots import rank_heatmaps

    chosen: dict[str, Any] = {}
    for run in sorted(tracker.children(parent_id), key=lambda r: (r.info.start_time, int(r.data.tags[f"{T}seed"]))):
        tags = run.data.tags
        allocates = tags.get(f"{T}approach", "triadapt") in GROWING and tags.get(f"{T}threshold") != "none"
        kept = tags.get(f"{T}selection") != "rejected"  # a value the grid's selection did not choose
        if run.info.status == FINISHED and allocates and kept and tags[f"{T}method"] not in chosen:
            chosen[tags[f"{T}method"]] = run
    if not chosen:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        panels = {}
        for method, run in chosen.items():
            local = tracker.client.download_artifacts(run.info.run_id, "final_ranks.json", tmp)
            panels[f"{method} ({run.data.tags[f'{T}task']}, seed {run.data.tags[f'{T}seed']})"] = json.loads(
                Path(local).read_text())
            Path(local).unlink()
        figure = rank_heatmaps(panels, Path(tmp) / "rank_heatmaps.png", title="final ranks per matrix")
        tracker.log_artifact(parent_id, figure)
    return "rank_heatmaps.png"


def _open_grid(spec: GridSpec, tracker: Tracker, force: bool) -> tuple[str, dict[str, str]]:
    parent_id = _parent(spec, tracker, force)
    return parent_id, _finished_cells(tracker, parent_id)


def _say(main: bool, line: str) -> None:
    if main:
        print(line, flush=True)


def _parent(spec: GridSpec, tracker: Tracker, force: bool) -> str:
    parents = tracker.find_parents(spec.name)
    if parents:
        latest = parents[-1]
        old_hash = latest.data.tags.get(f"{T}spec_hash")
        if old_hash == spec.spec_hash:
            tracker.client.update_run(latest.info.run_id, status=RUNNING)
            return latest.info.run_id
        if not force:
            raise RunnerError(f"grid {spec.name!r} in experiment {tracker.experiment!r} was started with another "
                              f"spec (hash {old_hash}, now {spec.spec_hash}); keep the spec to resume, rename the "
                              f"grid, or pass --force to start a new parent run")
    tags = {f"{T}grid": spec.name, f"{T}spec_hash": spec.spec_hash, f"{T}role": "parent",
            f"{T}cells": str(len(spec.cells()))}
    parent_id = tracker.start_run(f"grid:{spec.name}", tags)
    tracker.log_json(parent_id, "grid_spec.json", {"name": spec.name, "base": spec.base, "axes": spec.axes,
                                                   "seeds": spec.seeds, "source": spec.source})
    return parent_id


def _finished_cells(tracker: Tracker, parent_id: str) -> dict[str, str]:
    done = {}
    for run in tracker.children(parent_id):
        cell_id = run.data.tags.get(f"{T}cell_id")
        if run.info.status == FINISHED:
            done[cell_id] = run.info.run_id
        elif run.info.status == RUNNING:  # left open by a killed process
            tracker.set_tag(run.info.run_id, f"{T}error", "interrupted: the process ended before the run finished")
            tracker.end_run(run.info.run_id, KILLED)
    return done


def summary_lines(outcome: GridOutcome) -> list[str]:
    counts: dict[str, int] = {}
    for o in outcome.outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = [f"grid done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
             f" (parent run {outcome.parent_id})"]
    lines += [f"  failed {o.cell.id} {o.cell.method} {o.cell.task} seed {o.cell.seed}: {o.error}"
              for o in outcome.failed]
    return lines


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, RunnerError):
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        text += "".join(f" (at {Path(f.filename).name}:{f.lineno})" for f in frame)
    return text[:300]
