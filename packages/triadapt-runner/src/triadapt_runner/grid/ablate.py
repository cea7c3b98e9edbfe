"""Run a grid (or one run) with MLflow tracking; resume interrupted grids.

Resume rules (USERS.md 11): a cell whose child run FINISHED is skipped; a FAILED cell, or
one left RUNNING by a killed process (marked KILLED now), is run again; a grid whose spec
changed since its parent run was created is refused unless ``force`` (which starts a new
parent run). A failing cell does not stop the grid unless ``fail_fast``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from triadapt_runner.distributed.processes import main_only
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.cells import CellOutcome, outcome_line, run_cell
from triadapt_runner.grid.choosing import CHOSEN, apply_selection
from triadapt_runner.grid.spec import Cell, GridSpec
from triadapt_runner.preflight import preflight
from triadapt_runner.tracking.runs import FAILED, FINISHED, KILLED, RUNNING, TAG_PREFIX, Tracker

T = TAG_PREFIX


@dataclass
class GridOutcome:
    parent_id: str
    outcomes: list[CellOutcome]

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_grid(spec: GridSpec, tracker: Tracker | None, *, force: bool = False, fail_fast: bool = False,
             progress: bool = True, checkpoint_root: str | Path | None = None, jobs: int = 1) -> GridOutcome:
    """Run the grid's cells; under a multi-process launch every process calls this, the main one with the tracker.

    With ``select``, rows run one after another: a row's selection cells, the choice of its value
    from their results, then its other seeds at that value (`triadapt_runner.grid.selection`). A grid
    stopped part-way thus leaves whole rows (every seed) rather than seed 0 of every row. With
    ``jobs`` > 1 (one process only), up to that many cells run at once, each as soon as it can
    (`triadapt_runner.grid.workers`).
    """
    main = tracker is not None
    preflight(spec.cells(), spec.source)  # every cell checked before the parent run exists
    parent_id, done = main_only(lambda: _open_grid(spec, tracker, force))
    run = dict(tracker=tracker, parent_id=parent_id, done=done, spec=spec, fail_fast=fail_fast, progress=progress,
               checkpoint_root=checkpoint_root)
    if jobs > 1:
        from triadapt_runner.grid.workers import run_cells_in_processes

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


GROWING = ("triadapt", "increlora-style", "peft-adalora")


def log_rank_figure(tracker: Tracker, parent_id: str) -> str | None:
    """The paper's Figure 2 for the grid: final-rank heatmaps of every row whose ranks are allocated, side by side.

    One panel per row (method label), from its first task and lowest seed; logged on the parent run
    as ``rank_heatmaps.png``. Rows with fixed ranks (LoRA, full fine-tuning) have no panel.
    """
    from triadapt_runner.tracking.plots import rank_heatmaps

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
    lines = ["grid done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
             f" (parent run {outcome.parent_id})"]
    lines += [f"  failed {o.cell.id} {o.cell.method} {o.cell.task} seed {o.cell.seed}: {o.error}"
              for o in outcome.failed]
    return lines


