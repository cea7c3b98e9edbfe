"""What a finished run leaves behind: the reported metrics by the protocol, and its files.

Files (main process): the adapter, the evaluation's JSON artifacts (e.g. ``eval_logits.json``)
and, for methods with ranks, ``rank_heatmap.png`` (the paper's Figure 2), ``growth_events.json``
and ``rank_trajectory.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triadapt_runner.methods.base import Adapted, RankRecord
from triadapt_runner.tracking.plots import rank_heatmap


@dataclass
class RunResult:
    metrics: dict[str, float]  # the reported validation metrics (per the protocol)
    protocol: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch validation metrics
    ranks: dict[str, int] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path | None = None
    total_steps: int = 0
    world_size: int = 1
    device: str = ""  # where it trained, e.g. "cuda: NVIDIA H200, torch 2.11.0+cu130" (tag triadapt.device)
    run_metrics: dict[str, float] = field(default_factory=dict)  # rank use, capacity hits, parameters, step time


def finish(cfg: Any, task: Any, adapted: Adapted, history: list[dict[str, float]], out: Path, total_steps: int,
           accelerator: Any, artifacts: dict[str, Any], step_times: list[float]) -> RunResult:
    """The result by the protocol (best or last epoch); every process saves (collectively), the main one writes."""
    from triadapt_runner.tasks.registry import kind_for

    main = task.main_metric
    sign = -1.0 if kind_for(task).lower_is_better(main) else 1.0  # the best epoch by the metric's own direction
    chosen = max(history, key=lambda h: sign * h[main]) if cfg.train.report == "best" else history[-1]
    protocol = {"report": cfg.train.report, "split": "validation", "epoch": int(chosen["epoch"]),
                "main_metric": main, "seed": cfg.train.seed}
    out.mkdir(parents=True, exist_ok=True)
    adapted.save(out / "adapter", accelerator)
    record = adapted.rank_record()
    result = RunResult(metrics={k: v for k, v in chosen.items() if k != "epoch"}, protocol=protocol, history=history,
                       ranks=record.ranks if record else {}, events=record.events if record else [], output_dir=out,
                       total_steps=total_steps, device=device_description(accelerator.device),
                       run_metrics=run_metrics(adapted, record, step_times))
    if not accelerator.is_main_process:
        return result
    for name, data in artifacts.items():  # of the final model's evaluation (and per epoch where a kind keeps them)
        (out / name).write_text(json.dumps(data))
    if record:
        rank_heatmap(record.ranks, out / "rank_heatmap.png", title=f"{cfg.label} on {cfg.data.task}: final ranks")
        (out / "growth_events.json").write_text(json.dumps(record.events, indent=2))
        write_trajectory(out / "rank_trajectory.csv", record)
    return result


def device_description(device: Any) -> str:
    """The hardware and torch build a run trained on: a grid resumed on another machine shows it per run."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{device.type}, torch {torch.__version__}"


def run_metrics(adapted: Adapted, record: RankRecord | None, step_times: list[float]) -> dict[str, float]:
    import statistics

    out = {"trained_parameters": float(adapted.trained_parameters())}
    if step_times:
        out["median_step_s"] = statistics.median(step_times)
    if record:
        out["rank_use"] = record.rank_use
        out["capacity_hits"] = float(record.capacity_hits)
        if record.capacity_first_step is not None:
            out["capacity_first_step"] = float(record.capacity_first_step)
    return out


def write_trajectory(path: Path, record: RankRecord) -> None:
    """Ranks after every growth event (step 0: the start), one column per matrix."""
    names = list(record.ranks)
    ranks = dict(record.ranks)
    for event in record.events:  # back to the start
        for name, amount in event["grown"].items():
            ranks[name] -= amount
    lines = ["step,total_rank," + ",".join(names), "0," + str(sum(ranks.values())) + "," +
             ",".join(str(ranks[n]) for n in names)]
    for event in record.events:
        for name, amount in event["grown"].items():
            ranks[name] += amount
        lines.append(f"{event['step']},{sum(ranks.values())}," + ",".join(str(ranks[n]) for n in names))
    path.write_text("\n".join(lines) + "\n")
