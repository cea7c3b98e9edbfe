"""docs/results.md and README.md on the demo (`triadapt demo`, store `demo`): its time and the targets it was built
to meet (README, "what the demo shows")."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from results_drug_reviews import dates
from results_store import GridRuns, pct

LINEAR = "TriAdaptLoRA linear"
TIME_TARGET_S, FIRST_EVENT_TARGET, RANK_USE_TARGET, RANGE_TARGET = 300, 0.25, 0.8, 3


def artifact(grid: GridRuns, run_id: str, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(grid.tracker.client.download_artifacts(run_id, name, tmp)).read_text())


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def values(uri: str) -> dict[str, str]:
    grid = GridRuns(uri, "demo")
    parent = grid.tracker.client.get_run(grid.parent)
    seconds = (parent.info.end_time - parent.info.start_time) / 1000
    linear = grid.run(LINEAR, 0)
    events = artifact(grid, linear.info.run_id, "growth_events.json")
    ranks = list(artifact(grid, linear.info.run_id, "final_ranks.json").values())
    first = events[0]["k"] / len(ranks)
    rank_use = linear.data.metrics["rank_use"]
    return {
        "demo.date": dates(grid.runs),
        "demo.seconds": f"{seconds:.0f}",
        "demo.minutes": f"{seconds / 60:.1f}",
        "demo.time-target": met(seconds <= TIME_TARGET_S),
        "demo.first-event": f"{events[0]['k']} of {len(ranks)}",
        "demo.first-target": f"{first:.2f}, " + met(first <= FIRST_EVENT_TARGET),
        "demo.rank-use": f"{rank_use:.2f}",
        "demo.rank-target": met(rank_use >= RANK_USE_TARGET),
        "demo.rank-range": f"{min(ranks)} to {max(ranks)}",
        "demo.range-target": f"{max(ranks) - min(ranks)}, " + met(max(ranks) - min(ranks) >= RANGE_TARGET),
        "demo.accuracies": ", ".join(f"{m} {pct(grid.values(m)[0])}" for m in grid.methods()),
    }
