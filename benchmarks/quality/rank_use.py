"""Rank actually trained with, per method and task: the step-weighted mean of the total active rank.

At the same final budget a growing adapter trains with fewer ranks on average than LoRA at r_ref from
step 1; this table puts a number on it, from each finished cell's `rank_trajectory.csv` artifact.
    python benchmarks/quality/rank_use.py --grid offline-table1 [--tracking-uri URI] [--experiment NAME]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from mlflow.tracking import MlflowClient


def mean_total_rank(trajectory: list[tuple[int, int]], last_step: int) -> float:
    """Step-weighted mean of a piecewise-constant total rank: row (s, r) holds from step s to the next row."""
    points = sorted(trajectory) + [(max(last_step, trajectory[-1][0]), 0)]
    span = points[-1][0] - points[0][0]
    if span == 0:
        return float(points[0][1])
    return sum((nxt[0] - cur[0]) * cur[1] for cur, nxt in zip(points, points[1:])) / span


def read_trajectory(client: MlflowClient, run_id: str, scratch: Path) -> list[tuple[int, int]]:
    path = client.download_artifacts(run_id, "rank_trajectory.csv", str(scratch))
    with open(path, newline="") as handle:
        return [(int(row["step"]), int(row["total_rank"])) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--experiment", default="triadapt-offline")
    parser.add_argument("--tracking-uri", default="sqlite:///benchmarks/quality/mlflow.db")
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"--experiment={args.experiment!r} is invalid: no such experiment in {args.tracking_uri}")
    parents = client.search_runs([experiment.experiment_id], f"tags.`triadapt.grid` = '{args.grid}' and "
                                 "tags.`triadapt.role` = 'parent'", order_by=["attributes.start_time DESC"])
    if not parents:
        raise SystemExit(f"--grid={args.grid!r} is invalid: no parent run of that name in {args.experiment!r}")
    cells = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
                               " and attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    table: dict[tuple[str, str], list[float]] = defaultdict(list)
    finals: dict[tuple[str, str], set[int]] = defaultdict(set)
    with tempfile.TemporaryDirectory() as scratch:
        for run in cells:
            key = (run.data.tags["triadapt.method"], run.data.tags["triadapt.task"])
            trajectory = read_trajectory(client, run.info.run_id, Path(scratch) / run.info.run_id)
            last_step = max(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
            table[key].append(mean_total_rank(trajectory, last_step))
            finals[key].add(trajectory[-1][1])
    print("| method | task | mean total rank over training | final total rank | runs |")
    print("|---|---|---|---|---|")
    for (method, task), values in table.items():
        final = "/".join(str(v) for v in sorted(finals[(method, task)]))
        print(f"| {method} | {task} | {statistics.fmean(values):.1f} | {final} | {len(values)} |")


if __name__ == "__main__":
    main()
