"""How fast the `triadapt` command line answers: wall time of whole commands in fresh processes.

    python benchmarks/perf/cli_latency.py [--runs 5]      (run by `nox -s bench`)

Each command runs once untimed with bytecode writing on (so every module it imports is
compiled, as on any machine after the first call), then ``--runs`` times; the median is
reported against the targets. ``ablate --dry-run`` checks every cell of the offline
Tables I-III grid (data loaded, model structure, methods, schedules); its first call, which
builds the model structure on the meta device before caching it, is reported as well.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, provenance

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "benchmarks" / "ablations" / "offline-tables.yaml"


def cells() -> int:
    """The cells ``ablate --dry-run`` checks: every row at every value of its ``select`` and every seed."""
    from triadapt_runner.grid.spec import load_grid

    return len(load_grid(GRID).cells())


TARGETS = {"--help": 1.0, "plugins": 3.0, "compare": 5.0, "ablate --dry-run": 5.0}


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "triadapt_runner.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"triadapt {' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def store(uri: str) -> None:
    """A tracking store with one finished 6-cell grid for `compare` to read."""
    from triadapt_runner.tracking.runs import FINISHED, Tracker

    tracker = Tracker(uri, "triadapt-bench")
    parent = tracker.start_run("grid:bench", {"triadapt.grid": "bench", "triadapt.role": "parent"})
    for method in ("LoRA", "TriAdaptLoRA"):
        for seed in range(3):
            child = tracker.start_run("cell", {"triadapt.role": "cell", "triadapt.method": method, "triadapt.seed":
                                               str(seed), "triadapt.task": "rotten_tomatoes",
                                               "triadapt.config_hash": method, "triadapt.cell_id": f"{method}{seed}"},
                                      parent)
            tracker.log_metrics(child, {"result_accuracy": 0.7 + 0.01 * seed}, 1)
            tracker.end_run(child, FINISHED)
    tracker.end_run(parent, FINISHED)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triadapt-cli-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    store(uri)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRIADAPT_CACHE=str(work / "cache"))
    data_cache = Path(os.environ.get("TRIADAPT_CACHE", Path.home() / ".cache" / "triadapt")) / "data"
    if data_cache.is_dir():  # the built-in data files, already fetched: only the structure cache starts empty
        shutil.copytree(data_cache, work / "cache" / "data")
    commands = {"--help": ["--help"], "plugins": ["plugins"],
                "compare": ["compare", "--grid", "bench", "--tracking-uri", uri],
                "ablate --dry-run": ["ablate", str(GRID), "--dry-run"]}
    first = {name: run(argv, env) for name, argv in commands.items()}  # compiles bytecode, fills the caches
    times = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():  # interleaved
            times[name].append(run(argv, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {**provenance(threads=0), "runs": args.runs, "median_s": medians, "first_call_s": first,
              "targets_s": TARGETS, "met": {name: medians[name] <= TARGETS[name] for name in commands},
              "setup": f"fresh process per call, bytecode compiled; dry-run over {GRID.name} ({cells()} cells)"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_latency.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    for name in commands:
        print(f"{name:<18} median {medians[name]:.2f} s (first call {first[name]:.2f} s; target ≤ {TARGETS[name]} s)")


if __name__ == "__main__":
    main()
