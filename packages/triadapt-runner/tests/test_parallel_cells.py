"""`triadapt ablate --jobs N`: cells in worker processes as soon as they can run, the layout of a serial run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, assert_bad_input, run_cli, write_yaml

SELECTED = {"name": "lr-jobs", "experiment": "jobs", "base": {"task": "rotten_tomatoes", **TINY},
            "axes": [{"zip": {"method": ["TriAdaptLoRA", "TriAdaptLoRA again"]}}],
            "seeds": [0, 1], "select": {"axis": "train.learning_rate", "values": [1e-5, 2e-3], "seeds": [0]}}
PLAIN = {"name": "plain-jobs", "experiment": "jobs", "base": {"task": "rotten_tomatoes", **TINY},
         "axes": [{"zip": {"method": ["TriAdaptLoRA", "LoRA"], "adapter.structure": ["triangular", "lora"]}}],
         "seeds": [0]}


def _runs(uri, role):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("jobs").experiment_id
    return client, client.search_runs([experiment], f"tags.`triadapt.role` = '{role}'")


def test_cells_run_at_once_a_row_after_its_selection_with_the_serial_layout_and_resume(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", SELECTED)
    done = run_cli("ablate", grid, "--tracking-uri", uri, "--no-progress", "--jobs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "grid done: 6 finished" in done.stdout
    client, cells = _runs(uri, "cell")
    assert len(cells) == 6 and {r.info.status for r in cells} == {"FINISHED"}
    rows = {}
    for run in cells:
        rows.setdefault(run.data.tags["triadapt.method"], []).append(run)
    spans = {m: (min(r.info.start_time for r in rs), max(r.info.end_time for r in rs)) for m, rs in rows.items()}
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end  # the two rows overlapped in time: they ran in two processes
    for runs in rows.values():  # a row's seed 1 starts once both of its seed-0 selection cells have ended
        selection_end = max(r.info.end_time for r in runs if r.data.tags["triadapt.seed"] == "0")
        assert [r.info.start_time >= selection_end for r in runs if r.data.tags["triadapt.seed"] == "1"] == [True]
    import torch

    assert {r.data.tags["triadapt.device"] for r in cells} == {f"cpu, torch {torch.__version__}"}  # where it trained
    parent = _runs(uri, "parent")[1][0]
    assert parent.info.status == "FINISHED"
    report = json.loads(open(client.download_artifacts(parent.info.run_id, "selection.json", str(tmp_path))).read())
    assert len(report["rows"]) == 2  # written once more after both processes: every row, whichever ended last
    for row, entry in report["rows"].items():
        runs = rows[json.loads(row)["method"]]
        chosen = [r for r in runs if r.data.tags.get("triadapt.selection") == "chosen"]
        assert sorted(int(r.data.tags["triadapt.seed"]) for r in chosen) == [0, 1]
        assert {float(r.data.params["train.learning_rate"]) for r in chosen} == {entry["chosen"]}
    again = run_cli("ablate", grid, "--tracking-uri", uri, "--no-progress", "--jobs", "2")
    assert again.returncode == 0 and "grid done: 6 skipped" in again.stdout, again.stderr[-2000:]


def test_bad_jobs_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", PLAIN)
    assert_bad_input(["ablate", grid, "--tracking-uri", uri, "--jobs", "0"], r"--jobs=0 is invalid: give the number",
                     uri, capsys)


def test_an_interrupt_stops_the_workers_too(tmp_path):
    """SIGTERM to the main process alone (as `timeout` or `kill` sends it): it ends at once, and no worker trains on
    (each cell would train for minutes). Both cells of the grid (no `select`) are running when it comes: with
    --jobs 3 and two cells, every cell starts at once. SIGTERM is turned into the KeyboardInterrupt that Ctrl-C
    raises (`terminate_as_interrupt`), so this is also what Ctrl-C does from there on."""
    stop = signal.SIGTERM
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    long = {**PLAIN, "base": {**PLAIN["base"], "train": {**TINY["train"], "epochs": 400}}}
    grid = write_yaml(tmp_path / "g.yaml", long)
    cmd = [sys.executable, "-m", "triadapt_runner.cli", "ablate", str(grid), "--tracking-uri", uri, "--no-progress",
           "--jobs", "3"]
    log = tmp_path / "log.txt"
    with open(log, "w") as out:  # a file, not a pipe: the test waits for the process, not for every copy of a pipe
        main = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"})
    children = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not _runs_started(uri):
            time.sleep(1)
        children = _children(main.pid)
        assert children, "the workers never started"
        assert {r.info.status for r in _runs(uri, "cell")[1]} == {"RUNNING"}  # two long cells trained at once
        main.send_signal(stop)
        try:
            main.wait(timeout=60)
        except subprocess.TimeoutExpired:
            main.send_signal(signal.SIGABRT)  # faulthandler prints where every thread of it waits
            main.wait(timeout=30)
            raise AssertionError(f"ablate did not end within 60 s of {stop.name}:\n{log.read_text()[-6000:]}") from None
        assert main.returncode == 130, log.read_text()[-2000:]
        deadline = time.time() + 20
        while time.time() < deadline and [pid for pid in children if _alive(pid)]:
            time.sleep(0.5)
        assert not [pid for pid in children if _alive(pid)]  # no orphaned worker trains on
    finally:
        for pid in [main.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("command", ["ablate", "train"])
def test_a_terminated_serial_run_marks_its_training_cell_killed(command, tmp_path):
    """SIGTERM to a serial `ablate` or a `train` (as a batch scheduler's time limit sends it) ends it as Ctrl-C does:
    exit 130, and the run that was training is marked KILLED at once, not left RUNNING until a resume finds it."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    long = {**PLAIN, "base": {**PLAIN["base"], "train": {**TINY["train"], "epochs": 400}}}
    if command == "ablate":
        args = [str(write_yaml(tmp_path / "g.yaml", long))]
    else:
        args = ["--config", str(write_yaml(tmp_path / "c.yaml", long["base"])), "--experiment", "jobs"]
    cmd = [sys.executable, "-m", "triadapt_runner.cli", command, *args, "--tracking-uri", uri, "--no-progress"]
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        main = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline and main.poll() is None and not _runs_started(uri, 1):
            time.sleep(1)
        assert [r.info.status for r in _runs(uri, "cell")[1]] == ["RUNNING"], log.read_text()[-2000:]
        main.send_signal(signal.SIGTERM)
        assert main.wait(timeout=60) == 130, log.read_text()[-2000:]
        assert [r.info.status for r in _runs(uri, "cell")[1]] == ["KILLED"]
    finally:
        if _alive(main.pid):
            os.kill(main.pid, signal.SIGKILL)


def _runs_started(uri, cells: int = 2) -> bool:
    try:
        return len(_runs(uri, "cell")[1]) == cells
    except Exception:  # the store or the experiment does not exist yet
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_bad_gpus_per_cell_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", PLAIN)
    assert_bad_input(["ablate", grid, "--tracking-uri", uri, "--jobs", "2", "--gpus-per-cell", "0.3"],
                     r"--gpus-per-cell=0.3 is invalid: use a whole number of GPUs", uri, capsys)


@pytest.mark.parametrize("share,expected", [(1.0, ["0", "1"]), (0.5, ["0", "0"])], ids=["whole", "packed"])
def test_each_worker_gets_the_devices_placed_for_it(tmp_path, share, expected):
    """Two fake GPUs injected (this machine may have none): whole GPUs give each cell its own; halves pack both cells
    onto the first card. The cells still train on the CPU here; each run records what it was given."""
    from triadapt_runner.grid.ablate import _open_grid
    from triadapt_runner.grid.placement import Devices
    from triadapt_runner.grid.schedule import run_scheduled
    from triadapt_runner.grid.spec import parse_grid
    from triadapt_runner.grid.workers import LocalProcesses
    from triadapt_runner.tracking.runs import Tracker

    spec = parse_grid(PLAIN)
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "jobs")
    parent_id, done = _open_grid(spec, tracker, force=False)
    executor = LocalProcesses(2, tracker=tracker, parent_id=parent_id, grid=spec.name, checkpoint_root=None,
                              devices=Devices([0, 1], threads=2, gpus_per_cell=share))
    outcomes = run_scheduled(spec, executor, tracker=tracker, parent_id=parent_id, done=done, fail_fast=False,
                             progress=False)
    assert [o.status for o in outcomes] == ["finished", "finished"], [o.error for o in outcomes]
    runs = tracker.children(parent_id)
    assert sorted(r.data.tags["triadapt.visible_devices"] for r in runs) == expected
    assert {r.data.tags["triadapt.node"] for r in runs} == {__import__("socket").gethostname()}
