import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402

pytest_plugins = ["triadapt.testing"]

TINY = {"data": {"max_train_samples": 48, "max_eval_samples": 32, "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "learning_rate": 2e-3, "log_every": 1},
        "adapter": {"ref_rank": 2, "max_rank": 4}}


@pytest.fixture(autouse=True)
def _fresh_registry(bare_registry):
    yield bare_registry


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args, cwd=None, timeout=600):
    """Run `triadapt` in a subprocess (a real CLI invocation); returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "triadapt_runner.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` process on a free port (sqlite backend, served artifacts); its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mlflow server did not become healthy within 60 s")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)  # the server's worker processes too
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def write_yaml(path: Path, data) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- bad input: exit code 2, one line, nothing in MLflow created or changed -----------------------
def store_snapshot(uri: str) -> list:
    """Every run of every experiment: id, status, end time, params, metrics and tags (to detect any change)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000) if experiments else []
    return sorted((r.info.run_id, r.info.status, r.info.end_time, sorted(r.data.params.items()),
                   sorted(r.data.metrics.items()), sorted(r.data.tags.items())) for r in runs)


@pytest.fixture(scope="module")
def populated_store(tmp_path_factory):
    """A sqlite MLflow store holding a finished grid (parent and one cell), made through the runner's Tracker."""
    from triadapt_runner.tracking.runs import FINISHED, Tracker

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    tracker = Tracker(uri, "triadapt")
    parent = tracker.start_run("grid:g", {"triadapt.grid": "g", "triadapt.role": "parent"})
    child = tracker.start_run("cell", {"triadapt.role": "cell", "triadapt.method": "m", "triadapt.task": "rotten_tomatoes",
                                       "triadapt.seed": "0", "triadapt.config_hash": "h", "triadapt.cell_id": "c"},
                              parent)
    tracker.log_metrics(child, {"result_accuracy": 0.5}, 1)
    tracker.end_run(child, FINISHED)
    tracker.end_run(parent, FINISHED)
    return uri


def run_main(argv) -> int:
    """`triadapt` in-process; an argparse usage error's SystemExit becomes its exit code."""
    from triadapt_runner.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code)


def assert_bad_input(argv, pattern: str, uri: str, capsys) -> str:
    """Exit code 2, one stderr line matching ``pattern`` (it names the field or file), the store unchanged."""
    import re

    before = store_snapshot(uri)
    capsys.readouterr()
    code = run_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "error: " in err, err
    assert re.search(pattern, err), err
    assert store_snapshot(uri) == before
    return err
