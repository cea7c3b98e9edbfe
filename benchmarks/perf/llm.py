"""Decoder LLMs at scale, measured: memory per process under DeepSpeed ZeRO-0/2/3, and SFT throughput.

    python benchmarks/perf/llm.py [--steps 3] [--rounds 3]      (run by `nox -s bench`)

1. A Llama of about 19 M parameters (random weights, the MiniLM tokenizer) trains a few causal-LM
   SFT steps with TriAdaptLoRA under the deepspeed launcher with 2 CPU processes, at ZeRO-0, ZeRO-2,
   and ZeRO-3 built whole (``train.zero3_init: false``) or partitioned (the default). Each process
   reports the base-weight bytes it holds after building the model and its peak resident memory.
2. SmolLM2-135M-Instruct (the built-in ``smollm2``): training steps on Rotten Tomatoes instructions
   (batch 8, 128 tokens), peft LoRA r=8 vs TriAdaptLoRA at rank 8 (no growth), interleaved in one
   process; tokens per second of each.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, provenance

HERE = Path(__file__).resolve().parent
TARGETS = {"zero3_base_fraction": 0.6, "tokens_per_s_ratio": 0.95}


def llama_folder(folder: Path) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from triadapt_runner.models import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("minilm"))
    tokenizer.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def zero_memory(folder: str, work: Path) -> dict:
    """Peak memory and base-weight bytes per process for each ZeRO setting (2 processes, deepspeed launcher)."""
    out = {}
    settings = {"ZeRO-0": {"zero_stage": 0}, "ZeRO-2": {"zero_stage": 2},
                "ZeRO-3, built whole (zero3_init false)": {"zero_stage": 3, "zero3_init": False},
                "ZeRO-3 (built partitioned, the default)": {"zero_stage": 3}}
    for name, train in settings.items():
        cfg = {"model": folder, "task": "rotten_tomatoes_sft",
               "data": {"max_train_samples": 32, "max_eval_samples": 4, "max_length": 64},
               "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "threads": 1, **train},
               "adapter": {"ref_rank": 4}}
        target = work / f"setting{len(out)}"
        target.mkdir(parents=True)
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(29600 + len(out)),
               str(HERE / "llm_worker.py"), str(target), json.dumps(cfg)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
        ranks = [json.loads((target / f"rank{r}.json").read_text()) for r in range(2)]
        out[name] = {"peak_rss_mib": [r["peak_rss_mib"] for r in ranks],
                     "base_bytes_held": [r["base_bytes_local"] for r in ranks],
                     "base_bytes": ranks[0]["base_bytes_full"],
                     "base_fraction_held": max(r["base_bytes_local"] / r["base_bytes_full"] for r in ranks)}
    return out


def sft_throughput(steps: int, rounds: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import triadapt
    from triadapt.targets import DEFAULT_TARGETS
    from triadapt_runner.tasks.data.builtin import fetch, read_rotten_tomatoes
    from triadapt_runner.tasks.data.loading import as_instructions
    from triadapt_runner.tasks.causal_lm import Collator, _sft_features, prepare_tokenizer
    from triadapt_runner.models import model_path

    torch.set_num_threads(2)
    path = model_path("smollm2")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    rows = as_instructions(read_rotten_tomatoes(fetch("rotten_tomatoes"))[:8])
    batch = Collator(tokenizer.pad_token_id)(_sft_features(rows, tokenizer, 128, False))
    tokens = int(batch["attention_mask"].sum())

    def build(kind):
        model = AutoModelForCausalLM.from_pretrained(path)
        if kind == "peft LoRA r=8":
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=DEFAULT_TARGETS["llama"]))
            return model, [p for p in model.parameters() if p.requires_grad], None, None
        ctl = triadapt.inject(model, triadapt.TriAdaptConfig(init_rank=8, ref_rank=8, threshold="none", seed=0))
        return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl

    setups = {}
    for kind in ("peft LoRA r=8", "TriAdaptLoRA r=8"):
        model, params, extra, ctl = build(kind)
        setups[kind] = (model.train(), torch.optim.AdamW(params, lr=1e-4, fused=True), extra, ctl)
    times = {kind: [] for kind in setups}
    for round_index in range(rounds + 1):  # round 0 warms up
        order = list(setups) if round_index % 2 == 0 else list(reversed(setups))
        for kind in order:
            model, optimizer, extra, ctl = setups[kind]
            for _ in range(steps):
                start = time.perf_counter()
                loss = model(**batch).loss + (extra() if extra else 0)
                loss.backward()
                optimizer.step()
                if ctl is not None:
                    ctl.step(optimizer)  # the fresh-unit refresh, as in training
                optimizer.zero_grad(set_to_none=True)
                if round_index:
                    times[kind].append(time.perf_counter() - start)
    rates = {kind: tokens / statistics.median(values) for kind, values in times.items()}
    return {"tokens_per_batch": tokens, "median_step_s": {k: statistics.median(v) for k, v in times.items()},
            "tokens_per_s": rates, "ratio": rates["TriAdaptLoRA r=8"] / rates["peft LoRA r=8"]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        memory = zero_memory(llama_folder(Path(tmp) / "llama"), Path(tmp) / "runs")
    throughput = sft_throughput(args.steps, args.rounds)
    result = {**provenance(threads=2), "zero_memory": memory, "sft_throughput": throughput, "targets": TARGETS,
              "setup": "ZeRO: a 19 M-parameter random Llama, causal-LM SFT, 2 CPU processes (gloo), TriAdaptLoRA; "
                       "throughput: SmolLM2-135M-Instruct, batch 8 x up to 128 tokens, fp32, one process"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({"zero_memory": memory, "sft_throughput": throughput}, indent=2))


if __name__ == "__main__":
    main()
