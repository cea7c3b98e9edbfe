"""QLoRA-style SFT on a 4-bit base: TriAdaptLoRA against peft LoRA at the same rank, tokens/s and peak memory.

    python benchmarks/perf/qlora.py [--steps 4] [--rounds 2]      (run by `nox -s bench`)

SmolLM2-135M-Instruct (the built-in ``smollm2``) loaded in 4 bits by bitsandbytes (NF4, double
quantisation, float32 compute on the CPU, bfloat16 on a CUDA GPU), the seven Llama projections of
every layer adapted at rank 8: peft LoRA r=8 and TriAdaptLoRA at rank 8 (``threshold: none``, so
both train the same rank throughout). One batch of 8 Rotten Tomatoes instructions (up to 128
tokens). Each method runs in its own process (peak memory is per process), ``rounds`` processes
per method in alternating order; a process warms up one step, then times ``steps`` optimizer steps.
Reported: median tokens/s over all timed steps, and the peak resident memory of the process (CPU)
or the peak CUDA allocation (GPU), each as TriAdaptLoRA / peft.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from common import RESULTS, provenance, train_step

TARGETS = {"tokens_per_s_ratio": 0.95, "peak_memory_ratio": 1.05}
METHODS = ("peft LoRA r=8", "TriAdaptLoRA r=8")


def measure(method: str, steps: int) -> dict:
    """One process: load the 4-bit base, adapt it, time ``steps`` steps after one warm-up step."""
    import resource
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from triadapt_runner.tasks.data.builtin import fetch, read_rotten_tomatoes
    from triadapt_runner.tasks.data.loading import as_instructions
    from triadapt_runner.tasks.causal_lm import Collator, _sft_features, prepare_tokenizer
    from triadapt_runner.models import model_path

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        torch.set_num_threads(2)
    path = model_path("smollm2")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    rows = as_instructions(read_rotten_tomatoes(fetch("rotten_tomatoes"))[:8])
    batch = Collator(tokenizer.pad_token_id)(_sft_features(rows, tokenizer, 128, False))
    batch = {k: v.to(device) for k, v in batch.items()}
    settings = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=settings, device_map={"": device})
    model, params, extra, ctl = adapt(model, method)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for index in range(steps + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, optimizer, extra, batch, ctl)  # with ctl.step(optimizer): the fresh-unit refresh
        if cuda:
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB (ru_maxrss is KiB on Linux)
    return {"tokens": int(batch["attention_mask"].sum()), "step_s": times, "peak_mib": peak,
            "trained": sum(p.numel() for p in params), "device": device}


def adapt(model, method: str):
    from peft import LoraConfig, get_peft_model

    import triadapt
    from triadapt.targets import DEFAULT_TARGETS

    if method == "peft LoRA r=8":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=DEFAULT_TARGETS["llama"]))
        return model, [p for p in model.parameters() if p.requires_grad], None, None
    ctl = triadapt.inject(model, triadapt.TriAdaptConfig(init_rank=8, ref_rank=8, threshold="none", seed=0))
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl


def run(steps: int, rounds: int) -> dict:
    from triadapt_runner.models import model_path

    model_path("smollm2")  # converted once, before any timed process
    found = {method: [] for method in METHODS}
    for round_index in range(rounds):
        for method in METHODS if round_index % 2 == 0 else reversed(METHODS):
            done = subprocess.run([sys.executable, __file__, "--one", method, "--steps", str(steps)],
                                  capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"{method} failed: {done.stderr[-2000:]}")
            found[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {}
    for method, runs in found.items():
        step = statistics.median(t for r in runs for t in r["step_s"])
        out[method] = {"tokens_per_batch": runs[0]["tokens"], "median_step_s": step,
                       "tokens_per_s": runs[0]["tokens"] / step, "peak_mib": max(r["peak_mib"] for r in runs),
                       "peak_mib_each": [r["peak_mib"] for r in runs], "trained_parameters": runs[0]["trained"],
                       "device": runs[0]["device"]}
    ours, peft = out["TriAdaptLoRA r=8"], out["peft LoRA r=8"]
    return {"methods": out, "tokens_per_s_ratio": ours["tokens_per_s"] / peft["tokens_per_s"],
            "peak_memory_ratio": ours["peak_mib"] / peft["peak_mib"]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker process: measure one method, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps)))
        return
    result = run(args.steps, args.rounds)
    device = result["methods"]["peft LoRA r=8"]["device"]
    RESULTS.mkdir(exist_ok=True)
    name = "qlora.json" if device == "cpu" else "qlora_gpu.json"
    (RESULTS / name).write_text(json.dumps({**provenance(threads=2), **result, "targets": TARGETS}, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
