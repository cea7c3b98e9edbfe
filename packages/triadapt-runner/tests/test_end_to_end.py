"""A 2×2 grid through the real CLI on MiniLM; MLflow is queried afterwards; compare recomputed."""

import csv
import statistics

import matplotlib.image
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import TINY, run_cli, write_yaml
from triadapt import load
from triadapt_runner.models import model_path

GRID = {
    "name": "e2e",
    "experiment": "e2e",
    "base": {"task": "rotten_tomatoes", **TINY},
    "axes": [{"zip": {"method": ["lora", "triadapt"], "adapter.structure": ["lora", "triangular"],
                      "adapter.threshold": ["none", "linear"], "adapter.init_rank": [2, 1]}}],
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    grid = write_yaml(folder / "grid.yaml", GRID)
    (folder / "checkout").mkdir()  # the command runs in another folder than the database's
    done = run_cli("ablate", grid, "--tracking-uri", uri, "--no-progress", cwd=folder / "checkout")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, uri, done


def test_sqlite_artifacts_sit_beside_the_database_not_in_the_working_folder(finished_grid):
    folder, uri, _ = finished_grid
    assert list((folder / "checkout").iterdir()) == []  # no ./mlruns left in the folder the command ran in
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.artifact_location == (folder / "mlartifacts" / "e2e").as_uri()
    run = client.search_runs([experiment.experiment_id], "tags.`triadapt.role` = 'cell'")[0]
    assert (folder / "mlartifacts" / "e2e" / run.info.run_id / "artifacts" / "final_ranks.json").is_file()


def test_parent_and_children_are_linked_with_params_metrics_artifacts(finished_grid, tmp_path):
    folder, uri, _ = finished_grid
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("triadapt.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("triadapt.role") == "cell"]
    assert len(parents) == 1 and len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    triadapt_run = next(c for c in children if c.data.tags["triadapt.method"] == "triadapt")
    params, metrics = triadapt_run.data.params, triadapt_run.data.metrics
    assert params["adapter.threshold"] == "linear" and params["data.task"] == "rotten_tomatoes"
    assert {"loss", "lr", "total_rank", "budget_left", "eval_accuracy", "result_accuracy"} <= set(metrics)
    assert triadapt_run.data.tags["triadapt.protocol.report"] == "best"
    history = client.get_metric_history(triadapt_run.info.run_id, "total_rank")
    assert history[-1].value > history[0].value  # ranks grew during the run
    artifacts = {a.path for a in client.list_artifacts(triadapt_run.info.run_id)}
    assert {"resolved_config.json", "growth_events.json", "rank_trajectory.csv", "rank_heatmap.png",
            "adapter", "final_ranks.json"} <= artifacts
    assert not any("model.safetensors" == a.path.split("/")[-1] for a in client.list_artifacts(
        triadapt_run.info.run_id, "adapter"))  # the base weights are never uploaded
    local = client.download_artifacts(triadapt_run.info.run_id, "", str(tmp_path))
    image = matplotlib.image.imread(f"{local}/rank_heatmap.png")
    assert image.ndim == 3 and image.shape[0] > 100
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(model_path("minilm"), num_labels=2)
    ctl = load(base, f"{local}/adapter")
    assert sum(ctl.ranks.values()) == metrics["total_rank"]
    with torch.no_grad():
        assert ctl.model(input_ids=torch.tensor([[101, 2204, 102]])).logits.shape == (1, 2)


def test_compare_equals_numbers_recomputed_from_mlflow(finished_grid):
    folder, uri, _ = finished_grid
    done = run_cli("compare", "--grid", "e2e", "--experiment", "e2e", "--tracking-uri", uri,
                   "--csv", folder / "table.csv", "--markdown", folder / "table.md")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id],
                              "tags.`triadapt.role` = 'cell'")
    rows = {r["method"]: r for r in csv.DictReader((folder / "table.csv").open())}
    for method in ("lora", "triadapt"):
        values = [r.data.metrics["result_accuracy"] for r in runs if r.data.tags["triadapt.method"] == method]
        assert float(rows[method]["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-6)
        assert float(rows[method]["std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
        assert int(rows[method]["n"]) == 2
        assert f"{statistics.fmean(values) * 100:.2f} ± {statistics.stdev(values) * 100:.2f} (n=2)" in done.stdout
    assert "| method | rotten_tomatoes (accuracy) | average |" in (folder / "table.md").read_text()


def test_compare_rejects_duplicate_seeds_across_grids(finished_grid):
    folder, uri, _ = finished_grid
    lora_again = {**GRID, "name": "e2e-again", "seeds": [1],  # one cell of the first grid, trained again
                  "axes": [{"zip": {key: values[:1] for key, values in GRID["axes"][0]["zip"].items()}}]}
    rerun = run_cli("ablate", write_yaml(folder / "again.yaml", lora_again), "--tracking-uri", uri, "--no-progress",
                    cwd=folder)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = run_cli("compare", "--all", "--experiment", "e2e", "--tracking-uri", uri)
    assert done.returncode == 2
    assert "method 'lora'" in done.stderr and "has duplicate seeds [1]" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
