"""An ablation cell through the CLI selects the scorer by name; growth happens; MLflow records it."""

import subprocess
import sys

import yaml
from mlflow.tracking import MlflowClient

GRID = {
    "name": "sensitivity-cell",
    "base": {"task": "rotten_tomatoes", "data": {"max_train_samples": 48, "max_eval_samples": 32, "max_length": 32},
             "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2e-3, "log_every": 1},
             "adapter": {"ref_rank": 2, "max_rank": 4}},
    "axes": [{"zip": {"method": ["IncreLoRA-like"], "adapter.structure": ["lora"],
                      "adapter.scorer": ["sensitivity"], "adapter.threshold": ["fixed"], "adapter.fixed_k": [6]}}],
    "seeds": [0],
}


def test_cli_cell_with_sensitivity_scorer(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "triadapt_runner.cli", "ablate", str(grid), "--tracking-uri", uri,
                           "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("triadapt").experiment_id],
                                "tags.`triadapt.role` = 'cell'")
    assert run.data.tags["triadapt.scorer"] == "sensitivity" and run.data.params["adapter.scorer"] == "sensitivity"
    events = client.download_artifacts(run.info.run_id, "growth_events.json", str(tmp_path))
    assert len(yaml.safe_load(open(events))) >= 1  # growth events happened
