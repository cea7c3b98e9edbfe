"""Run a grid (or one run) with MLflow tracking; resume interrupted grids.

Resume rules: a cell whose child run FINISHED is skipped; a FAILED cell, or
one left RUNNING by a killed process (marked KILLED now), is run again; a grid whose spec
changed since its parent run was created is refused unless ``force`` (which starts a new
parent run). A failing cell does not stop the grid unless ``fail_fast``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triadapt_runner.distributed.processes import main_only
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.cells import CellOutcome
from triadapt_runner.grid.executors import CellExecutor, SerialExecutor
from triadapt_runner.grid.schedule import run_scheduled
from triadapt_runner.grid.spec import GridSpec
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
             progress: bool = True, checkpoint_root: str | Path | None = None, jobs: int | None = None,
             gpus_per_cell: float = 1.0, backend: str = "local", ray_address: str | None = None) -> GridOutcome:
    """Run the grid's cells; under a multi-process launch every process calls this, the main one with the tracker.

    The order and the selection protocol are the grid's schedule (`triadapt_runner.grid.schedule`); the
    cells run on an executor (`triadapt_runner.grid.executors`): one at a time in this process, or with
    ``jobs`` > 1 (one process only) up to that many at once in worker processes, each on its own devices
    (``gpus_per_cell``: whole GPUs per process, or a fraction of one). With ``backend="ray"`` they are
    Ray tasks on the cluster at ``ray_address`` (else ``$RAY_ADDRESS``, else a local Ray instance), at most
    ``jobs`` at once when given. Everything is checked, and the cluster reached, before the parent run exists.
    """
    main = tracker is not None
    on_ray = backend == "ray"
    preflight(spec.cells(), spec.source, devices_here=not on_ray)  # every cell checked before the parent run exists
    devices = cluster = None
    if on_ray:
        from triadapt_runner.grid.ray_tasks import connect, disconnect

        cluster = connect(ray_address)
        try:
            cluster.check(spec.cells(), gpus_per_cell)
            cluster.check_tracking(tracker.uri)
        except RunnerError:
            disconnect()
            raise
    elif (jobs or 1) > 1:
        from triadapt_runner.grid.placement import Devices

        devices = Devices.of_this_machine(gpus_per_cell)
        for cell in spec.cells():  # each cell fits this machine with these settings, or nothing starts
            devices.check(cell.config.train.num_processes)
    try:
        parent_id, done = main_only(lambda: _open_grid(spec, tracker, force))
    except BaseException:
        if cluster is not None:
            disconnect()
        raise
    executor: CellExecutor
    if cluster is not None:
        from triadapt_runner.grid.ray_tasks import RayTasks

        executor = RayTasks(cluster, tracker=tracker, parent_id=parent_id, grid=spec.name,
                            checkpoint_root=checkpoint_root, gpus_per_cell=gpus_per_cell, max_cells=jobs)
    elif devices is not None:
        from triadapt_runner.grid.workers import LocalProcesses

        executor = LocalProcesses(jobs or 1, tracker=tracker, parent_id=parent_id, grid=spec.name,
                                  checkpoint_root=checkpoint_root, devices=devices)
    else:
        executor = SerialExecutor(tracker, parent_id, spec.name, progress=progress, checkpoint_root=checkpoint_root)
    try:
        outcomes = run_scheduled(spec, executor, tracker=tracker, parent_id=parent_id, done=done, fail_fast=fail_fast,
                                 progress=progress)
    except RunnerError as exc:  # e.g. a row whose selection cannot choose: the grid failed, its parent says why
        if main:
            tracker.set_tag(parent_id, f"{T}error", str(exc)[:4000])
            tracker.end_run(parent_id, FAILED)
        raise
    if main:
        log_rank_figure(tracker, parent_id)
        tracker.end_run(parent_id, FAILED if any(o.status == "failed" for o in outcomes) else FINISHED)
    return GridOutcome(parent_id, outcomes)


GROWING_IN_0_1 = ("triadapt", "increlora-style", "peft-adalora")  # runs logged before the allocates_ranks tag


def log_rank_figure(tracker: Tracker, parent_id: str) -> str | None:
    """The paper's Figure 2 for the grid: final-rank heatmaps of every row whose ranks are allocated, side by side.

    One panel per row (method label), from its first task and lowest seed; logged on the parent run
    as ``rank_heatmaps.png``. Rows with fixed ranks (LoRA, full fine-tuning) have no panel.
    """
    from triadapt_runner.tracking.plots import rank_heatmaps

    chosen: dict[str, Any] = {}
    for run in sorted(tracker.children(parent_id), key=lambda r: (r.info.start_time, int(r.data.tags[f"{T}seed"]))):
        tags = run.data.tags
        allocates = tags[f"{T}allocates_ranks"] == "true" if f"{T}allocates_ranks" in tags else (  # 0.1 runs
            tags.get(f"{T}approach", "triadapt") in GROWING_IN_0_1 and tags.get(f"{T}threshold") != "none")
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


