"""SQuAD 2.0 through the CLI with MiniLM: trains, evaluates and logs EM / F1 to MLflow."""

import json

from mlflow.tracking import MlflowClient

from conftest import run_cli, write_yaml
from squad_fixture import write_squad


def test_qa_run_logs_exact_and_f1(tmp_path):
    squad = write_squad(tmp_path / "squad.json", long_context=True)
    config = write_yaml(tmp_path / "run.yaml", {
        "task": "squad_v2", "method": "qa",
        "data": {"train_file": str(squad), "validation_file": str(squad), "max_length": 96, "doc_stride": 32},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "learning_rate": 3e-3, "log_every": 1},
        "adapter": {"ref_rank": 2, "max_rank": 4}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_cli("train", "--config", config, "--tracking-uri", uri, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("triadapt").experiment_id])
    metrics = run.data.metrics
    assert {"eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "result_f1", "result_exact"} <= set(metrics)
    assert 0.0 <= metrics["result_exact"] <= metrics["result_f1"] <= 100.0
    assert run.data.tags["triadapt.task"] == "squad_v2" and run.data.tags["triadapt.protocol.main_metric"] == "f1"
    meta = client.download_artifacts(run.info.run_id, "adapter/triadapt_adapter.json", str(tmp_path))
    assert json.loads(open(meta).read())["heads"] == ["qa_outputs"]  # the QA head is trained and saved
    assert "rank_heatmap.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
