"""Training-step time on MiniLM (CPU, batch 32, seq 64), every method side by side in one run.

Methods are interleaved round by round (alternating order) so that machine drift hits all
alike: TriAdaptLoRA ``triangular`` and peft LoRA at ranks 2, 4, 8, 16 (the rank curve), the
``lora`` structure at r=8, peft AdaLoRA (init_r 12, target 8), full fine-tuning, and
triangular vs peft LoRA r=8 on 6, 12, 24 and 36 adapted matrices (the matrices curve).

    python benchmarks/perf/step_time.py [--rounds 3] [--steps 3]
"""

from __future__ import annotations

import json
import statistics

import torch

from common import (RESULTS, Setup, TARGET_SETS, full_finetune, make_batch,
                    parse_args, peft_adalora, peft_lora, provenance, triadapt)

RANKS = (2, 4, 8, 16)
SETUP = ("MiniLM-L6 (22.7M), batch 32, seq 64, AdamW, fp32; 36 matrices unless stated; TriAdaptLoRA with the orthogonal "
         "loss on and ctl.step(optimizer) after each step, the upper half of its units joined after step 1 (so the "
         "fresh-unit correction runs), trainable parameters as the optimizer holds them (row padding included)")


def methods() -> dict:
    out = {}
    for rank in RANKS:
        out[f"triangular r={rank}"] = triadapt("triangular", rank)
        out[f"peft LoRA r={rank}"] = peft_lora(rank)
    out["lora structure r=8"] = triadapt("lora", 8)
    out["peft AdaLoRA"] = peft_adalora()
    out["full fine-tuning"] = full_finetune
    for count, targets in TARGET_SETS.items():
        if count != 36:
            out[f"triangular r=8, {count} matrices"] = triadapt("triangular", 8, targets)
            out[f"peft LoRA r=8, {count} matrices"] = peft_lora(8, targets)
    return out


def main() -> None:
    args = parse_args(__doc__, rounds=3, steps=3)
    batch = make_batch()
    setups = {}
    for name, build in methods().items():
        setups[name] = Setup(build)
        setups[name].steps(batch, 1)  # warm-up: caches, optimizer state
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for round_index in range(args.rounds):
        order = list(setups) if round_index % 2 == 0 else list(reversed(setups))
        for name in order:
            samples[name] += setups[name].steps(batch, args.steps)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    ratios = {f"r={r}": medians[f"triangular r={r}"] / medians[f"peft LoRA r={r}"] for r in RANKS}
    ratios.update({f"{c} matrices": medians[f"triangular r=8, {c} matrices"] / medians[f"peft LoRA r=8, {c} matrices"]
                   for c in TARGET_SETS if c != 36})
    report = {**provenance(args.threads),
              "setup": SETUP,
              "steps_per_method": args.rounds * args.steps, "median_step_s": medians,
              "triangular_over_peft_lora": ratios,
              "trainable_parameters": {name: s.trainable for name, s in setups.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "step_time.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"median_step_s": medians, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
