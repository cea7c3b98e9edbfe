"""What keeping grown units fresh costs per optimizer step: in the torch optimizer, and in DeepSpeed's fp32 copies.

    python benchmarks/perf/zero_refresh_cost.py      (run by `nox -s bench`; about 8 minutes on 2 CPU cores)

Each case trains TriAdaptLoRA on MiniLM + Rotten Tomatoes in one process with the runner's `train_run` (a world of
one under DeepSpeed: no launcher), in its own Python process. The refresh's entry points are wrapped with a timer:
`UnitRefresher.__call__` (the young rows' correction on the parameters, without DeepSpeed), `_correct_flat` (the
same correction on DeepSpeed's fp32 copies, a post-step hook inside DeepSpeed's step) and `reset_joining` (joining
units, at growth events). Reported per case: the time in the refresh per optimizer step, the run's median step time
(`median_step_s`, the runner's own metric) and their ratio; under DeepSpeed also the part of it spent finding this
process's share of each unit in the copies (`triadapt.zero_shares.zero_shares`, looked up at each call) and how often
DeepSpeed's step calls the hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, provenance

CONFIG = {"task": "rotten_tomatoes", "data": {"max_train_samples": 512, "max_eval_samples": 64, "max_length": 64},
          "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 64, "learning_rate": 5e-3, "weight_decay": 0.1,
                    "threads": 2, "log_every": 1000},
          "adapter": {"warmup_steps": 4, "growth_interval": 4}}
CASES = {"no DeepSpeed": {}, "ZeRO-1": {"zero_stage": 1}, "ZeRO-2": {"zero_stage": 2}, "ZeRO-3": {"zero_stage": 3}}
TIMED = ("__call__", "_correct_flat", "reset_joining")
LOOKUP = "zero_shares"  # finding this process's part of each unit in DeepSpeed's copies, called by the flat ones


def measure(case: str, out: Path) -> None:
    """In this process: train one case with the refresh's entry points timed; write the figures to ``out``."""
    from triadapt.fresh_units import UnitRefresher
    from triadapt_runner.config import RunConfig
    from triadapt_runner.training import train_run

    spent = {name: 0.0 for name in TIMED}
    calls = {name: 0 for name in TIMED}

    def timed(name, original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
                calls[name] += 1
        return wrapper

    for name in TIMED:
        setattr(UnitRefresher, name, timed(name, getattr(UnitRefresher, name)))
    import triadapt.zero_shares as shares  # the lookup, inside the two flat entry points (not added to them)

    spent[LOOKUP], calls[LOOKUP] = 0.0, 0
    shares.zero_shares = timed(LOOKUP, shares.zero_shares)
    cfg = {**CONFIG, "train": {**CONFIG["train"], **CASES[case]}}
    with tempfile.TemporaryDirectory() as tmp:
        result = train_run(RunConfig.from_dict(cfg), tmp, progress=False)
    steps = result.total_steps
    refresh = sum(spent[name] for name in TIMED)
    out.write_text(json.dumps({
        "steps": steps, "events": len(result.events), "median_step_s": result.run_metrics["median_step_s"],
        "refresh_ms_per_step": 1000 * refresh / steps, "seconds": spent, "calls": calls,
        "share_of_step": refresh / steps / result.run_metrics["median_step_s"],
        "lookup_ms_per_step": 1000 * spent[LOOKUP] / steps, "hook_calls_per_step": calls["_correct_flat"] / steps,
        "accuracy": result.metrics.get("accuracy")}))


def main() -> None:
    results = {}
    load = os.getloadavg()[0]  # other work on the machine slows every case alike; it is recorded, not subtracted
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            out = Path(tmp) / "case.json"
            done = subprocess.run([sys.executable, __file__, "--case", case, str(out)], env=env, capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"{case} failed: {done.stderr[-2000:]}")
            results[case] = json.loads(out.read_text())
            print(case, f"{results[case]['refresh_ms_per_step']:.2f} ms per step "
                        f"({100 * results[case]['share_of_step']:.1f} % of the median step)", flush=True)
    setup = (f"TriAdaptLoRA (defaults, 36 matrices) on MiniLM + Rotten Tomatoes ({CONFIG['data']['max_train_samples']} "
             f"training examples, {CONFIG['data']['max_length']} tokens, batch {CONFIG['train']['batch_size']}), "
             f"one process with {CONFIG['train']['threads']} threads, fp32, weight decay 0.1, a growth event every "
             f"{CONFIG['adapter']['growth_interval']} optimizer steps (1-minute load average at the start: {load:.1f})")
    out = {**provenance(CONFIG["train"]["threads"]), "setup": setup, "cases": results}
    (RESULTS / "zero_refresh_cost.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'zero_refresh_cost.json'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        measure(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
