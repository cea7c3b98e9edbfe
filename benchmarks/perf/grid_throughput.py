"""Grid throughput of the three executors: serial, `--jobs 2` and `--backend ray` on a 2-node Ray cluster.

    python benchmarks/perf/grid_throughput.py [--cells 8] [--samples 256]      (run by `nox -s bench`)

The same grid (``--cells`` cells of peft LoRA on MiniLM + Rotten Tomatoes, seeds 0..cells-1) runs once per
backend, each from a plain `triadapt ablate` in a fresh process, into one real `mlflow server` (an
experiment per backend; the Ray cells on other nodes need a server). Each backend keeps its defaults:
serial trains with every core, `--jobs 2` splits them, Ray reserves 1 CPU a cell on a cluster of two
1-CPU nodes (`ray.cluster_utils.Cluster`, both on this machine); "serial, 1 thread" (``train.threads: 1``)
separates what the parallel backends gain from torch's own use of both cores. Reported, from the runs' own start and end
times: wall time, cells per hour, the median time a cell spent inside its MLflow run, the backend's
overhead per cell (the median gap between one cell's end and the next cell's start in the same slot:
scheduling, a worker's set-up, tracking), the checks before the grid opens (process start, imports,
the preflight of every cell) and the wait from the grid's parent run to its first cell (worker processes
or the Ray connection starting).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import RESULTS, provenance

ROOT = Path(__file__).resolve().parents[2]
# name: (flags, cells at once, torch threads per cell; None: the backend's default)
BACKENDS = {"serial": ([], 1, None), "serial, 1 thread": ([], 1, 1), "--jobs 2": (["--jobs", "2"], 2, None),
            "ray, 2 nodes of 1 CPU": (["--backend", "ray"], 2, None)}


def grid(cells: int, samples: int, threads: int | None = None) -> dict:
    return {"name": "throughput", "base": {
        "task": "rotten_tomatoes", "method": "peft LoRA", "approach": "peft-lora",
        "data": {"max_train_samples": samples, "max_eval_samples": 64, "max_length": 64},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "learning_rate": 1e-3, "threads": threads}},
        "axes": [], "seeds": list(range(cells))}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--artifacts-destination",
                             str(work / "artifacts"), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("mlflow server did not start")


def timeline(url: str, experiment: str, launched: float) -> dict:
    """From the runs' own start and end times: cells, the time inside each run, the gap between consecutive cells
    of one slot (a slot: the cells that ran one after another, chained greedily), and the start-up before the
    first cell."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], "tags.`triadapt.role` = 'cell'")
    spans = sorted((r.info.start_time / 1000, r.info.end_time / 1000) for r in runs if r.info.status == "FINISHED")
    (parent,) = client.search_runs([experiment_id], "tags.`triadapt.role` = 'parent'")
    slots: list[float] = []  # the end of each slot's last cell
    gaps = []
    for start, end in spans:
        free = [i for i, last in enumerate(slots) if last <= start]
        if free:
            i = max(free, key=lambda j: slots[j])  # the slot that freed last before this cell
            gaps.append(start - slots[i])
            slots[i] = end
        else:
            slots.append(end)
    return {"cells": len(spans), "median_cell_run_s": statistics.median(e - s for s, e in spans),
            "median_gap_between_cells_s": statistics.median(gaps) if gaps else None,
            "checks_before_grid_s": parent.info.start_time / 1000 - launched,
            "first_cell_after_grid_opened_s": spans[0][0] - parent.info.start_time / 1000}


def ablate_timed(work: Path, uri: str, experiment: str, flags: list[str], env: dict[str, str]) -> tuple[float, dict]:
    """`triadapt ablate work/grid.yaml` in a fresh process: its wall time and the `timeline` of its runs."""
    launched, start = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "triadapt_runner.cli", "ablate", str(work / "grid.yaml"),
                           "--tracking-uri", uri, "--experiment", experiment, "--no-progress", *flags],
                          capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{experiment} failed: {done.stderr[-1500:]}")
    return wall, timeline(uri, experiment, launched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--samples", type=int, default=256, help="training examples per cell")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="triadapt-throughput-"))
    server, url = start_server(work)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 1024 ** 2})
    cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 ** 2)
    cluster.wait_for_nodes()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_ADDRESS": cluster.address}
    rows = {}
    try:
        for name, (flags, slots, threads) in BACKENDS.items():
            experiment = "throughput-" + name.replace(",", "").strip("- ").replace(" ", "-")
            (work / "grid.yaml").write_text(json.dumps(grid(args.cells, args.samples, threads)))
            wall, row = ablate_timed(work, url, experiment, flags, env)
            rows[name] = {"wall_s": wall, "slots": slots, "cells_per_hour": 3600 * row["cells"] / wall, **row}
            print(f"{name:<24} {wall:7.1f} s  {rows[name]['cells_per_hour']:6.1f} cells/h  cell run "
                  f"{row['median_cell_run_s']:5.1f} s  gap {row['median_gap_between_cells_s']:5.1f} s  checks "
                  f"{row['checks_before_grid_s']:5.1f} s  first cell after {row['first_cell_after_grid_opened_s']:5.1f} s",
                  flush=True)
    finally:
        cluster.shutdown()
        os.killpg(server.pid, signal.SIGTERM)
    serial = rows["serial"]["cells_per_hour"]
    result = {**provenance(threads=0), "cells": args.cells, "train_samples": args.samples, "backends": rows,
              "speedup_vs_serial": {name: row["cells_per_hour"] / serial for name, row in rows.items()},
              "speedup_vs_serial_1_thread": {name: row["cells_per_hour"] / rows["serial, 1 thread"]["cells_per_hour"]
                                             for name, row in rows.items()},
              "ray_overhead_vs_serial_s": rows["ray, 2 nodes of 1 CPU"]["median_gap_between_cells_s"]
              - rows["serial"]["median_gap_between_cells_s"],
              "targets": {"speedup_vs_serial": 1.6, "ray_overhead_vs_serial_s": 5.0},
              "setup": "one grid of peft LoRA cells on MiniLM + Rotten Tomatoes per backend, from a fresh `triadapt "
                       "ablate`, into one mlflow server; each backend's default threads"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "grid_throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
