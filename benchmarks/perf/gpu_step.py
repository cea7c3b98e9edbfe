"""Training-step time on one CUDA GPU in bf16: TriAdaptLoRA triangular vs peft LoRA at rank 8 (issue #14).

    python benchmarks/perf/gpu_step.py                    (run by `nox -s gpu`; needs a CUDA GPU)
    python benchmarks/perf/gpu_step.py --smoke-on-cpu     (the same path on a tiny DeBERTa-v2, CPU)

A DeBERTa-v3-base-sized model (DeBERTa-v2 architecture, 768 hidden, 12 layers, 3072 FFN, random
initialisation), sequence classification, batch 32 × 128, bf16 autocast over fp32 weights,
AdamW fused, the same 72 matrices adapted by both methods (query/key/value projections,
attention output, intermediate, output). TriAdaptLoRA: rank 8 of a capacity of 16, the upper
half of the units joined after step 1 (so the fresh-unit refresh runs), orthogonal loss on and
``ctl.step(optimizer)`` after each step. Methods interleaved round by round; each step is timed
between two ``torch.cuda.synchronize()``. Writes benchmarks/perf/results/gpu_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from common import RESULTS, provenance, train_step

TARGETS = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"]
TARGET = 1.05  # TriAdaptLoRA step time relative to peft LoRA (issue #14)


def deberta(smoke: bool):
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000) \
        if smoke else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                           vocab_size=128100)
    config = DebertaV2Config(**size, max_position_embeddings=512, relative_attention=True, position_buckets=256,
                             norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                             position_biased_input=False, type_vocab_size=0, num_labels=2)
    torch.manual_seed(0)
    return DebertaV2ForSequenceClassification(config)


def build(kind: str, smoke: bool, device: torch.device):
    model = deberta(smoke).to(device)
    if kind == "peft LoRA r=8":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None, None
    from triadapt import TriAdaptConfig, inject

    ctl = inject(model, TriAdaptConfig(init_rank=4, ref_rank=8, max_rank=16, threshold="fixed", fixed_k=1,
                                       total_steps=10 ** 6, warmup_steps=10 ** 5, growth_interval=10 ** 5,
                                       target_modules=TARGETS, seed=0, orth_reg_weight=0.1))
    for layer in ctl.layers.values():
        layer.grow(4, step=1)  # rank 8, of which 4 units joined after optimizer step 1
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl


def timed_step(setup, batch, device) -> float:
    model, optimizer, extra, ctl = setup
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_step(model, optimizer, extra, batch, ctl, autocast=torch.autocast(device_type=device.type,
                                                                           dtype=torch.bfloat16))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke-on-cpu", action="store_true", help="check the path on a tiny model on the CPU")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if not args.smoke_on_cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_step.py needs a CUDA GPU (torch.cuda.is_available() is False); --smoke-on-cpu checks "
                         "the path on the CPU")
    device = torch.device("cpu" if args.smoke_on_cpu else "cuda")
    batch_size, seq = (2, 16) if args.smoke_on_cpu else (32, 128)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (batch_size, seq), generator=gen)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": torch.randint(0, 2, (batch_size,), generator=gen).to(device)}
    kinds = ("peft LoRA r=8", "TriAdaptLoRA triangular r=8 (capacity 16)")
    setups, times = {}, {kind: [] for kind in kinds}
    for kind in kinds:
        model, params, extra, ctl = build(kind, args.smoke_on_cpu, device)
        model.train()
        setups[kind] = (model, torch.optim.AdamW(params, lr=1e-4, fused=True), extra, ctl)
        for _ in range(3):
            timed_step(setups[kind], batch, device)  # warm-up: kernels, optimizer state
    for round_index in range(args.rounds):
        for kind in (kinds if round_index % 2 == 0 else tuple(reversed(kinds))):
            times[kind] += [timed_step(setups[kind], batch, device) for _ in range(args.steps)]
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    ratio = medians[kinds[1]] / medians[kinds[0]]
    result = {**provenance(threads=torch.get_num_threads()), "median_step_s": medians, "ratio": ratio,
              "target": TARGET, "smoke_on_cpu": args.smoke_on_cpu,
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "setup": f"DeBERTa-v3-base-sized DeBERTa-v2 (random init), batch {batch_size} x {seq}, bf16 autocast, "
                       f"AdamW fused, 72 matrices at rank 8, methods interleaved"}
    print(json.dumps(result, indent=2))
    if not args.smoke_on_cpu:  # a smoke run's figures are not results
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "gpu_step.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
