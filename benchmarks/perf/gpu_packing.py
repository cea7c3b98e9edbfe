"""Small cells packed on one GPU: `--jobs 4 --gpus-per-cell 0.25` against one cell at a time, on one card.

    CUDA_VISIBLE_DEVICES=0 python benchmarks/perf/gpu_packing.py [--cells 8] [--samples 1000]   (`nox -s gpu`)

The same grid as `grid_throughput.py` (peft LoRA cells on MiniLM + Rotten Tomatoes) runs twice from a plain
`triadapt ablate` on the first visible GPU, into a sqlite store: serially, then four cells at once, each
holding a quarter of the card. Reported: wall time, cells per hour, the median time inside a cell's run,
which GPU each cell's process was given (its `triadapt.visible_devices` tag) and how many cells overlapped
at most. Needs a CUDA GPU; it refuses to run without one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import RESULTS, provenance
from grid_throughput import ablate_timed, grid

RUNS = {"one cell at a time": ([], 1), "--jobs 4 --gpus-per-cell 0.25": (["--jobs", "4", "--gpus-per-cell", "0.25"],
                                                                        4)}


def most_at_once(uri: str, experiment: str) -> tuple[int, list[str]]:
    """The largest number of cell runs that overlapped in time, and the devices the cells were given."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`triadapt.role` = 'cell'")
    edges = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak, sorted({r.data.tags.get("triadapt.visible_devices", "") for r in runs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000, help="training examples per cell")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_packing.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    work = Path(tempfile.mkdtemp(prefix="triadapt-packing-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    (work / "grid.yaml").write_text(json.dumps(grid(args.cells, args.samples)))
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": first}
    rows = {}
    for name, (flags, slots) in RUNS.items():
        experiment = "packing-" + str(slots)
        wall, row = ablate_timed(work, uri, experiment, flags, env)
        peak, devices = most_at_once(uri, experiment)
        rows[name] = {"wall_s": wall, "cells_per_hour": 3600 * row["cells"] / wall, "most_at_once": peak,
                      "visible_devices": devices, **row}
        print(f"{name:<32} {wall:7.1f} s  {rows[name]['cells_per_hour']:6.1f} cells/h  at most {peak} at once  "
              f"devices {devices}", flush=True)
    serial = rows["one cell at a time"]["cells_per_hour"]
    result = {**provenance(threads=0), "gpu": torch.cuda.get_device_name(0), "cells": args.cells,
              "train_samples": args.samples, "runs": rows,
              "speedup": {name: row["cells_per_hour"] / serial for name, row in rows.items()},
              "setup": "one grid of peft LoRA cells on MiniLM + Rotten Tomatoes per run, from a fresh `triadapt "
                       "ablate`, on one GPU, into one sqlite store"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_packing.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
