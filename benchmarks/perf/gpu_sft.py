"""Causal-LM SFT on one CUDA GPU in bf16 under DeepSpeed ZeRO-2 and ZeRO-3: TriAdaptLoRA vs peft LoRA.

    python benchmarks/perf/gpu_sft.py                      (run by `nox -s gpu`; needs a CUDA GPU)
    python benchmarks/perf/gpu_sft.py --smoke-on-cpu       (the same path on a tiny random Llama, CPU)
    python benchmarks/perf/gpu_sft.py --random-weights     (SmolLM2's architecture and tokenizer, random weights)

SmolLM2-135M-Instruct (the built-in ``smollm2``) trains on Rotten Tomatoes instructions at rank 8
(TriAdaptLoRA without growth, so both methods train the same rank throughout), batch 16 × up to
256 tokens. Each (stage, method) runs in a process of its own under the deepspeed launcher, through
the runner's own DeepSpeed setup (`gpu_sft_worker.py`); stages and methods alternate so that drift
of the machine hits both methods alike. Prints tokens/s and peak GPU memory of each, and the ratio
TriAdaptLoRA / peft LoRA; writes benchmarks/perf/results/gpu_sft.json (date, commit, device), or
gpu_sft_batch<N>.json for another --batch-size (docs/performance.md shows both when both exist).

``--random-weights`` builds the model from its config with seeded random weights instead of
loading them: for a GPU machine that the 0.5 GB converted weight folder cannot reach. Step time
and memory depend on the architecture, the tokens and the method, not on the weights' values;
the losses do.
``--profile`` runs the timed steps under cProfile and writes each cell's top functions (by own
and by cumulative time) to benchmarks/perf/results/profiles/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, provenance

HERE = Path(__file__).resolve().parent
METHODS = {"peft LoRA r=8": "peft-lora", "TriAdaptLoRA r=8": "triadapt"}
PROFILES = RESULTS / "profiles"
DEFAULT_BATCH = 16
TARGET = 0.95  # TriAdaptLoRA tokens/s relative to peft LoRA (issue #13)


def run_cell(spec: dict, work: Path, port: int, cpu: bool) -> dict:
    out = work / f"{spec['stage']}-{spec['approach']}.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if cpu:
        env["DS_ACCELERATOR"] = "cpu"
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port", str(port),
           str(HERE / "gpu_sft_worker.py"), str(out), json.dumps(spec)]  # the module: also where pip --target put it
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"ZeRO-{spec['stage']} {spec['approach']} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per cell (after --warmup)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--smoke-on-cpu", action="store_true",
                        help="check the path without a GPU: a tiny random Llama, 2 steps, bf16 on the CPU")
    parser.add_argument("--random-weights", action="store_true",
                        help="the model's architecture with seeded random weights (config and tokenizer only needed)")
    parser.add_argument("--profile", action="store_true",
                        help=f"run the timed steps under cProfile; each cell's top functions go to {PROFILES} "
                             f"(profiled step times are not results: no gpu_sft.json is written)")
    args = parser.parse_args()
    import torch

    if not args.smoke_on_cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_sft.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                         "--smoke-on-cpu checks the path on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = "smollm2"
        steps, warmup, batch, length = args.steps, args.warmup, args.batch_size, args.max_length
        if args.smoke_on_cpu:
            from llm import llama_folder

            model, steps, warmup, batch, length = llama_folder(work / "llama"), 2, 1, 4, 64
        cells = {}
        for index, stage in enumerate((2, 3)):
            names = list(METHODS) if index % 2 == 0 else list(reversed(METHODS))
            for name in names:
                spec = {"model": model, "approach": METHODS[name], "stage": stage, "precision": "bf16",
                        "batch_size": batch, "max_length": length, "steps": steps, "warmup": warmup,
                        "random_weights": args.random_weights}
                if args.profile:  # a smoke run's listings stay in its temporary folder
                    folder = work if args.smoke_on_cpu else PROFILES
                    folder.mkdir(parents=True, exist_ok=True)
                    spec["profile"] = str(folder / f"zero{stage}-{METHODS[name]}.txt")
                cells[f"ZeRO-{stage} {name}"] = run_cell(spec, work, 29700 + len(cells), args.smoke_on_cpu)
    ratios = {f"ZeRO-{stage}": cells[f"ZeRO-{stage} TriAdaptLoRA r=8"]["tokens_per_s"]
              / cells[f"ZeRO-{stage} peft LoRA r=8"]["tokens_per_s"] for stage in (2, 3)}
    result = {**provenance(threads=int(os.environ.get("OMP_NUM_THREADS", "2"))), "cells": cells,
              "tokens_per_s_ratio": ratios, "target": TARGET, "smoke_on_cpu": args.smoke_on_cpu,
              "setup": f"{model}{' (random weights)' if args.random_weights else ''}, causal-LM SFT, "
                       f"batch {batch} x up to {length} tokens, bf16, rank 8, "
                       f"{warmup} warm-up + {steps} timed steps, one process per cell (deepspeed launcher)"}
    print(f"{'cell':<30} {'tokens/s':>10} {'peak MiB':>10} {'step s':>8}")
    for name, cell in cells.items():
        print(f"{name:<30} {cell['tokens_per_s']:>10.0f} {cell['peak_memory_mib']:>10.0f} {cell['median_step_s']:>8.4f}")
    for stage, ratio in ratios.items():
        print(f"{stage}: TriAdaptLoRA / peft LoRA tokens/s = {ratio:.3f} (target >= {TARGET})")
    if not (args.smoke_on_cpu or args.profile):  # a smoke run's or a profiled run's figures are not results
        RESULTS.mkdir(exist_ok=True)
        name = "gpu_sft" if batch == DEFAULT_BATCH else f"gpu_sft_batch{batch}"
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
