"""A cell with ``train.num_processes`` = k > 1, started by the runner as a k-process job.

The runner launches ``torchrun`` (torch's own launcher: it sets the rank, world size and rendezvous of
every process, and stops them all when one fails) with `triadapt_runner.grid.job_process` as the program. Every process of
the job trains the cell, DDP or DeepSpeed as its ``train`` section says; the job's first process
writes the cell's one MLflow run under the grid's parent, as in a launched grid. The runner reads
the outcome back from that run. A process that dies fails the cell (its run is marked FAILED with
the job's last error line), not the grid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from triadapt_runner.grid.outcome import CellOutcome
from triadapt_runner.grid.spec import Cell

JOB_TAG = "triadapt.job_id"  # one per start of a cell's job
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def run_cell_as_job(tracker: Any, cell: Cell, parent_id: str | None, grid: str | None, *, checkpoint_root: Any,
                    extra_tags: dict[str, str] | None) -> CellOutcome:
    """Train ``cell`` as a ``train.num_processes``-process job; its outcome, from the run the job wrote."""
    import torch

    from triadapt_runner.distributed.setup import free_port, setup_for

    processes = cell.config.train.num_processes
    spec = {"uri": tracker.uri, "experiment": tracker.experiment, "parent_id": parent_id, "grid": grid,
            "cell": {"id": cell.id, "config": cell.config.to_dict(), "axes": cell.axes, "seed": cell.seed,
                     "row": cell.row},
            "checkpoint_root": str(checkpoint_root) if checkpoint_root else None}
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // processes))  # this process's share, split
    env.update(setup_for(cell.config.train, processes).launch_environment())
    tags = {**(extra_tags or {}), JOB_TAG: uuid.uuid4().hex}  # finds this job's run, and no other
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.json"
        path.write_text(json.dumps({**spec, "extra_tags": tags}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), "-m", "triadapt_runner.grid.job_process", str(path)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=_end_with_parent)
    return _outcome(tracker, cell, tags[JOB_TAG], proc)


def _end_with_parent() -> None:
    """torchrun gets SIGTERM (and stops its processes) when the process that started it dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # elsewhere: an interrupted grid may leave the job to finish on its own


def _outcome(tracker: Any, cell: Cell, job_id: str, proc: subprocess.CompletedProcess) -> CellOutcome:
    from triadapt_runner.tracking.runs import FAILED, FINISHED, RUNNING, TAG_PREFIX

    runs = tracker.runs(f"tags.`{JOB_TAG}` = '{job_id}'")
    run = runs[0] if runs else None
    if run is not None and run.info.status == FINISHED:  # trained and logged (a failure after that is teardown)
        metrics = {k[len("result_"):]: v for k, v in run.data.metrics.items() if k.startswith("result_")}
        return CellOutcome(cell, "finished", run.info.run_id, metrics=metrics)
    error = _last_error(proc)
    if run is not None:
        tracker.log_text(run.info.run_id, "job_stderr.txt", (proc.stderr or "")[-200_000:])  # the whole story
        # the job's account, whoever closed the run: the first process may have recorded only what it saw of a
        # peer's death (a broken connection), or died before it could close the run
        tracker.set_tag(run.info.run_id, f"{TAG_PREFIX}error", error)
        if run.info.status == RUNNING:
            tracker.end_run(run.info.run_id, FAILED)
    return CellOutcome(cell, "failed", run.info.run_id if run else None, error=error)


def _last_error(proc: subprocess.CompletedProcess) -> str:
    """The job's own one-line error if it printed one, else what torchrun reports (a process's exit code)."""
    lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
    own = [line[len("cell failed: "):] for line in lines if line.startswith("cell failed: ")]
    died = [line for line in lines if "exitcode" in line or "Signal" in line]
    detail = own[-1] if own else (died[-1] if died else (lines[-1] if lines else "no output"))
    return f"the {proc.args[4]}-process job ended with code {proc.returncode}: {detail}"[:300]
