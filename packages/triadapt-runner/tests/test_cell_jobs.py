"""Cells that are multi-process jobs (`train.num_processes: 2`) in a plain `triadapt ablate`, on CPU with gloo."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from conftest import TINY, write_yaml

GRID = {"name": "jobs-of-two", "experiment": "jobs", "base": {"task": "rotten_tomatoes", **TINY,
                                                               "train": {**TINY["train"], "num_processes": 2,
                                                                         "threads": 1}},
        "axes": [{"zip": {"method": ["DDP", "ZeRO-2"], "train.zero_stage": [None, 2]}}], "seeds": [0]}
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}


def ablate(grid: Path, uri: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "triadapt_runner.cli", "ablate", str(grid), "--tracking-uri", uri, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def job_processes(rank: str) -> list[int]:
    """Processes of a cell job (`triadapt_runner.grid.job_process`) with this LOCAL_RANK."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or b"triadapt_runner.grid.job_process" not in (entry / "cmdline").read_bytes():
                continue
            env = dict(v.split(b"=", 1) for v in (entry / "environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if env.get(b"LOCAL_RANK") == rank.encode():
            found.append(int(entry.name))
    return found


def cells(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("jobs")
    if experiment is None:
        return {}
    experiment = experiment.experiment_id
    runs = client.search_runs([experiment], "tags.`triadapt.role` = 'cell'")
    return {r.data.tags["triadapt.method"]: r for r in runs}


def test_cells_of_two_processes_each_and_a_killed_one_fails_alone(tmp_path):
    """DDP and ZeRO-2 cells of 2 processes finish with world size 2; a third cell whose second process is killed
    fails alone (its run FAILED with the job's error), and the grid reports it."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = {**GRID, "axes": [{"zip": {"method": ["DDP", "ZeRO-2", "DDP killed"], "train.zero_stage": [None, 2, None]}}]}
    proc = ablate(write_yaml(tmp_path / "g.yaml", grid), uri)
    deadline = time.time() + 900
    while not (job_processes("1") and "DDP killed" in cells(uri)):  # the third cell's second process, its run open
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.5)
    os.kill(job_processes("1")[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, err[-3000:]
    assert "grid done: 1 failed, 2 finished" in out, out
    runs = cells(uri)
    for name in ("DDP", "ZeRO-2"):  # one MLflow run per cell, written by the job's first process
        assert runs[name].info.status == "FINISHED" and runs[name].data.tags["triadapt.world_size"] == "2"
        assert "result_accuracy" in runs[name].data.metrics
    killed = runs["DDP killed"]
    assert killed.info.status == "FAILED" and "2-process job ended" in killed.data.tags["triadapt.error"]
