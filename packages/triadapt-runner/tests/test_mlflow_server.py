"""Runs logged to a real `mlflow server` on 127.0.0.1 started by the test."""

import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, free_port, run_cli, write_yaml


@pytest.fixture
def mlflow_server(tmp_path):
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
    import os
    import signal

    os.killpg(proc.pid, signal.SIGTERM)  # the server's worker processes too
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_train_logs_to_server(mlflow_server, tmp_path):
    config = write_yaml(tmp_path / "run.yaml", {"task": "rotten_tomatoes", "method": "server-run", **TINY})
    done = run_cli("train", "--config", config, "--tracking-uri", mlflow_server, "--experiment", "served",
                   "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["triadapt.method"] == "server-run"
    assert "result_accuracy" in run.data.metrics
    assert "rank_heatmap.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
