"""One cell of a grid, trained as a child MLflow run, and what came of it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import traceback
from pathlib import Path

from triadapt_runner.distributed.launch import world_size
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.outcome import CellOutcome
from triadapt_runner.grid.spec import Cell
from triadapt_runner.tracking.runs import FAILED, FINISHED, KILLED, TAG_PREFIX, Tracker
from triadapt_runner.tracking.results import RunResult

T = TAG_PREFIX


def run_cell(tracker: Tracker | None, cell: Cell, parent_id: str | None, grid: str | None, progress: bool = True,
             output_root: str | Path | None = None, checkpoint_root: str | Path | None = None,
             extra_tags: dict[str, str] | None = None) -> CellOutcome:
    """Train one cell as a child run; the run ends FINISHED or FAILED, never left open.

    Every process of a multi-process launch calls this; only the main process has a ``tracker``
    (the others pass None), so each cell is one MLflow run whatever the world size. The run opens
    once the cell is set up (data, model, adapters, optimizer): an input the preflight could not
    judge and the set-up refuses (a `RunnerError`, e.g. a model class that ZeRO-3 cannot build
    partitioned) fails the cell with one line and no MLflow run; any other failure, before or
    after, is recorded on the run. With ``checkpoint_root`` the cell checkpoints to
    ``checkpoint_root/<cell id>`` and resumes from there; the checkpoints are removed once the
    cell has finished.
    """
    if tracker is None:
        return _run_cell_worker(cell, progress, output_root, checkpoint_root)
    if cell.config.train.num_processes > 1 and world_size() == 1:  # a multi-process job of its own
        from triadapt_runner.grid.cell_job import run_cell_as_job

        return run_cell_as_job(tracker, cell, parent_id, grid, checkpoint_root=checkpoint_root, extra_tags=extra_tags)
    cfg = cell.config
    tags = _tags(cell, grid, extra_tags)
    run_id: str | None = None

    def open_run() -> None:
        nonlocal run_id
        run_id = tracker.start_run(f"{cfg.label}/{cfg.data.task}/seed{cell.seed}", tags, parent_id)
        tracker.log_params(run_id, cfg.to_dict())
        tracker.log_json(run_id, "resolved_config.json", cfg.to_dict())

    from triadapt_runner.training import train_run  # transformers: only when a cell trains, before its run opens

    try:
        with tempfile.TemporaryDirectory(dir=output_root) as tmp:
            result = train_run(cfg, tmp, log=lambda m, s: tracker.log_metrics(run_id, m, s), progress=progress,
                               checkpoint_dir=_checkpoints(checkpoint_root, cell), on_set_up=open_run)
            _log_result(tracker, run_id, result)
        _clear_checkpoints(checkpoint_root, cell)
    except BaseException as exc:
        if run_id is None and isinstance(exc, RunnerError):  # refused while setting up: an input error
            return CellOutcome(cell, "failed", None, error=_one_line(exc))
        if run_id is None:  # a crash while setting up is recorded like any other
            open_run()
        tracker.set_tag(run_id, f"{T}error", f"{type(exc).__name__}: {exc}"[:4000])
        tracker.end_run(run_id, KILLED if isinstance(exc, KeyboardInterrupt) else FAILED)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return CellOutcome(cell, "failed", run_id, error=_one_line(exc))
    tracker.end_run(run_id, FINISHED)
    return CellOutcome(cell, "finished", run_id, metrics=result.metrics)


def _tags(cell: Cell, grid: str | None, extra_tags: dict[str, str] | None) -> dict[str, str]:
    """What a cell's run is tagged with: the cell, its method's strategies, provenance, axes and where it trains."""
    from triadapt_runner.methods.provenance import provenance_tags
    from triadapt_runner.methods.registry import method_for

    cfg = cell.config
    tags = {f"{T}cell_id": cell.id, f"{T}method": cfg.label, f"{T}task": cfg.data.task, f"{T}seed": str(cell.seed),
            f"{T}config_hash": cfg.config_hash(), f"{T}role": "cell", f"{T}model": cfg.model,
            f"{T}approach": cfg.approach}
    method = method_for(cfg)
    tags.update({f"{T}{key}": value for key, value in method.strategy_tags(cfg).items()})
    tags[f"{T}allocates_ranks"] = str(method.allocates_ranks(cfg)).lower()
    tags.update({f"{T}{key}": value for key, value in provenance_tags(cfg).items()})
    tags.update({f"{T}axis.{k}": str(v) for k, v in cell.axes.items()})
    tags[f"{T}node"] = socket.gethostname()  # where it trains, beside on what (a Ray task: its node id)
    tags.update(extra_tags or {})
    if grid:
        tags[f"{T}grid"] = grid
    return tags


def _run_cell_worker(cell: Cell, progress: bool, output_root: str | Path | None,
                     checkpoint_root: str | Path | None) -> CellOutcome:
    """A non-main process: the same training, no tracking (its failure is reported by the main process)."""
    from triadapt_runner.training import train_run

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
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs a --jobs worker was given
        tracker.set_tag(run_id, f"{T}visible_devices", os.environ["CUDA_VISIBLE_DEVICES"])
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


def outcome_line(outcome: CellOutcome) -> str:
    cell = outcome.cell
    if outcome.status == "skipped":
        return f"{'skipped':<9}{cell.id} {cell.method} {cell.task} seed {cell.seed} (finished earlier)"
    detail = outcome.error if outcome.status == "failed" else _metrics_text(outcome.metrics)
    return f"{outcome.status:<9}{cell.id} {cell.method} {cell.task} seed {cell.seed}: {detail}"


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, RunnerError):
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        text += "".join(f" (at {Path(f.filename).name}:{f.lineno})" for f in frame)
    return text[:300]
