"""An interrupted grid (killed process) resumes: only missing cells train; a changed spec is refused."""

import os
import signal
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from conftest import TINY, run_cli, write_yaml

GRID = {"name": "resume", "experiment": "resume", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"product": {"adapter.threshold": ["linear", "fixed"]}}],
        "seeds": [0]}
GRID["base"] = {**GRID["base"], "adapter": {**TINY["adapter"], "fixed_k": 2}}


def test_killed_grid_resumes_and_changed_spec_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_yaml(tmp_path / "grid.yaml", GRID)
    cmd = [sys.executable, "-m", "triadapt_runner.cli", "ablate", str(grid), "--tracking-uri", uri, "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    finished_lines = []
    deadline = time.time() + 300
    for line in proc.stdout:  # kill the whole process as soon as the first cell has finished
        if line.startswith("finished"):
            finished_lines.append(line)
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline
    proc.wait()
    assert len(finished_lines) == 1 and proc.returncode == -signal.SIGKILL

    again = run_cli("ablate", grid, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = again.stdout.splitlines()
    assert sum(line.startswith("skipped") for line in lines) == 1
    assert sum(line.startswith("finished") for line in lines) == 1
    first_cell = finished_lines[0].split()[1]
    assert any(line.startswith("skipped") and first_cell in line for line in lines)

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id],
                              "tags.`triadapt.role` = 'cell'")
    statuses = sorted(r.info.status for r in runs)
    assert statuses.count("FINISHED") == 2 and statuses.count("KILLED") <= 1  # the interrupted cell, if started
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1

    third = run_cli("ablate", grid, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert third.returncode == 0 and "2 skipped" in third.stdout

    changed = write_yaml(tmp_path / "grid.yaml", {**GRID, "seeds": [0, 1]})
    refused = run_cli("ablate", changed, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert refused.returncode == 2
    assert "was started with another spec" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    dry = run_cli("ablate", changed, "--dry-run")
    assert dry.returncode == 0 and "4 cells" in dry.stdout


def test_force_starts_a_new_parent_for_a_changed_spec(tmp_path):
    from triadapt_runner.grid.ablate import _parent
    from triadapt_runner.errors import RunnerError
    from triadapt_runner.grid.spec import parse_grid
    from triadapt_runner.tracking.runs import Tracker

    import pytest

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "force")
    first = _parent(parse_grid(GRID), tracker, force=False)
    assert _parent(parse_grid(GRID), tracker, force=False) == first  # same spec: resume the same parent
    changed = parse_grid({**GRID, "seeds": [3]})
    with pytest.raises(RunnerError, match="was started with another spec"):
        _parent(changed, tracker, force=False)
    second = _parent(changed, tracker, force=True)
    assert second != first and _parent(changed, tracker, force=False) == second
