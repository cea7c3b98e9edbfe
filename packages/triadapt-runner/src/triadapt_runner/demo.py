"""The demo: LoRA r=8 vs TriAdaptLoRA (linear, nonlinear) at the same rank budget.

Built-in MiniLM on built-in Rotten Tomatoes, trained for real, tracked in MLflow, ending
with the comparison table, the rank heatmap and the command that opens the MLflow UI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from triadapt_runner.ablate import run_grid, summary_lines
from triadapt_runner.compare import build_table, collect_runs
from triadapt_runner.grid import parse_grid
from triadapt_runner.tracking import Tracker

METHODS = {
    "zip": {
        "method": ["LoRA r=8", "TriAdaptLoRA linear", "TriAdaptLoRA nonlinear"],
        "adapter.structure": ["lora", "triangular", "triangular"],
        "adapter.threshold": ["none", "linear", "nonlinear"],
        "adapter.init_rank": [8, 1, 1],
        "adapter.orth_reg_weight": [0.0, 0.1, 0.1],
    }
}


def demo_grid(quick: bool) -> dict:
    train, evaluation = (160, 96) if quick else (3000, 1000)
    return {
        "name": "demo-quick" if quick else "demo",
        "base": {
            "task": "rotten_tomatoes",
            "data": {"max_train_samples": train, "max_eval_samples": evaluation, "max_length": 64},
            "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2e-3, "warmup_ratio": 0.06,
                      "log_every": 5},
            "adapter": {"ref_rank": 8, "rank_increment": 1, "lora_alpha": 16},
        },
        "axes": [METHODS],
        "seeds": [0],
    }


def run_demo(tracking_uri: str | None, experiment: str, quick: bool = False, progress: bool = True) -> int:
    spec = parse_grid(demo_grid(quick), source="demo")
    tracker = Tracker(tracking_uri, experiment)
    print(f"TriAdapt demo: {len(spec.cells())} runs on MiniLM + Rotten Tomatoes "
          f"({spec.base['data']['max_train_samples']} training reviews), tracked at {tracker.uri}")
    outcome = run_grid(spec, tracker, progress=progress)
    print("\n".join(summary_lines(outcome)))
    table = build_table(collect_runs(tracker, parent_id=outcome.parent_id))
    print("\nvalidation accuracy (%), same total rank budget (8 per matrix):\n")
    print(table.terminal())
    heatmap = _heatmap_location(tracker, outcome)
    if heatmap:
        print(f"rank heatmap of TriAdaptLoRA linear: {heatmap}")
    print(f"open the MLflow UI: mlflow ui --backend-store-uri {tracker.uri}")
    return 1 if outcome.failed else 0


def _heatmap_location(tracker: Tracker, outcome) -> str | None:
    for o in outcome.outcomes:
        if o.run_id and o.cell.config.adapter.get("threshold") == "linear":
            uri = tracker.client.get_run(o.run_id).info.artifact_uri.rstrip("/") + "/rank_heatmap.png"
            parsed = urlparse(uri)
            return str(Path(parsed.path)) if parsed.scheme in ("", "file") else uri
    return None
