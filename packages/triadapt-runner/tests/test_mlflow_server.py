"""Runs logged to a real `mlflow server` on 127.0.0.1 started by the test (the fixture `mlflow_server`)."""

from mlflow.tracking import MlflowClient

from conftest import TINY, run_cli, write_yaml


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
