"""Growth under DeepSpeed ZeRO against DDP: the same 2-process run under every stage, precision and offload.

    python benchmarks/perf/zero_growth.py      (run by `nox -s bench`; about 20 minutes on 2 CPU cores)

Each case is a plain `triadapt train` with ``train.num_processes: 2`` (the runner launches the two processes:
DeepSpeed's launcher under ZeRO, torch's otherwise), TriAdaptLoRA on MiniLM + Rotten Tomatoes with weight decay
and a growth event every 2 optimizer steps, so that the optimizer state of joining and young units matters. The
loss of every step comes from the run's MLflow metric history (process 0's batch). Reported per case: whether it
finished (else its last error line), the growth events against the reference's, and the largest difference of
the loss curve from DDP's in fp32 and from DDP's in the same precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, provenance

BASE = {"data.task": "rotten_tomatoes", "data.max_train_samples": 128, "data.max_eval_samples": 64,
        "data.max_length": 32, "train.epochs": 2, "train.batch_size": 8, "train.eval_batch_size": 32,
        "train.learning_rate": 1e-2, "train.weight_decay": 0.1, "train.log_every": 1, "train.threads": 1,
        "train.num_processes": 2, "adapter.ref_rank": 2, "adapter.max_rank": 4, "adapter.warmup_steps": 1,
        "adapter.growth_interval": 2}
# name: overrides; DDP rows are the references
CASES = {"DDP fp32": {}, "DDP bf16": {"train.mixed_precision": "bf16"}}
CASES["ZeRO-0 bf16"] = {"train.zero_stage": 0, "train.mixed_precision": "bf16"}
for stage in (1, 2, 3):
    for precision in ("no", "bf16"):
        for offload in (False, True):
            name = f"ZeRO-{stage} {'fp32' if precision == 'no' else 'bf16'}{' offload' if offload else ''}"
            CASES[name] = {"train.zero_stage": stage, "train.mixed_precision": precision,
                           "train.offload_optimizer": offload}


def run_case(name: str, overrides: dict, work: Path) -> dict:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    sets = [arg for key, value in {**BASE, **overrides}.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    cmd = [sys.executable, "-m", "triadapt_runner.cli", "train", *sets, "--tracking-uri", uri, "--experiment", name,
           "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=1800)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error:" in line]
        return {"finished": False, "error": (errors or lines or ["no output"])[-1][:300]}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name(name).experiment_id])[0]
    losses = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
    events = json.loads(Path(client.download_artifacts(run.info.run_id, "growth_events.json", str(work))).read_text())
    return {"finished": True, "losses": [value for _, value in losses], "steps": [step for step, _ in losses],
            "accuracy": run.data.metrics.get("eval_accuracy"), "rank_use": run.data.metrics.get("rank_use"),
            "events": [[event["step"], event["grown"]] for event in events]}


def largest_gap(left: list[float], right: list[float]) -> float:
    return max(abs(a - b) for a, b in zip(left, right, strict=True))


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, overrides) in enumerate(CASES.items()):
            work = Path(tmp) / str(index)
            work.mkdir()
            results[name] = run_case(name, overrides, work)
            print(name, "finished" if results[name]["finished"] else results[name]["error"], flush=True)
    fp32, bf16 = results["DDP fp32"], results["DDP bf16"]
    for name, row in results.items():
        if row["finished"]:
            same = bf16 if "bf16" in name else fp32
            row["gap_to_ddp_fp32"] = largest_gap(row["losses"], fp32["losses"])
            row["gap_to_ddp_same_precision"] = largest_gap(row["losses"], same["losses"])
            row["same_events_as_ddp"] = row["events"] == same["events"]
    out = {**provenance(1), "setup": "TriAdaptLoRA on MiniLM + Rotten Tomatoes (128 training examples, 32 tokens), "
           "2 processes on the CPU (gloo), batch 8 per process, lr 1e-2 with weight decay 0.1, growth every 2 "
           "optimizer steps", "cases": results}
    (RESULTS / "zero_growth.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'zero_growth.json'}")


if __name__ == "__main__":
    main()
