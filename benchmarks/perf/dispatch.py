"""Per-step dispatch cost: top-level aten operations per training step, and the optimizer step alone.

    python benchmarks/perf/dispatch.py [--steps 10]      (run by `nox -s bench`)

MiniLM-L6 at a dispatch-bound size (batch 2 x 16 tokens), 36 matrices at rank 8, AdamW fused,
orthogonal loss on for TriAdaptLoRA. TriAdaptLoRA reserves a capacity of 16 units per matrix,
as a growing run does. Operations are counted with torch.profiler over one warm step; only
top-level ``aten::`` operations (those not called by another aten operation) count.
"""

from __future__ import annotations

import collections
import json
import statistics
import time

import torch

from common import BERT_TARGETS, RESULTS, base_model, make_batch, parse_args, provenance


def build(kind: str):
    model = base_model()
    if kind == "peft LoRA r=8":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=BERT_TARGETS, task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None
    from triadapt import TriAdaptConfig, inject

    structure = "triangular" if kind.startswith("triangular") else "lora"
    config = TriAdaptConfig(structure=structure, init_rank=8, ref_rank=8, max_rank=16, threshold="fixed", fixed_k=1,
                            total_steps=10 ** 6, warmup_steps=10 ** 5, growth_interval=10 ** 5,
                            target_modules=BERT_TARGETS, seed=0, orth_reg_weight=0.1)
    ctl = inject(model, config)
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss


def step(model, optimizer, extra, batch) -> None:
    loss = model(**batch).loss
    if extra is not None:
        loss = loss + extra()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def top_level_ops(model, optimizer, extra, batch) -> collections.Counter:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(model, optimizer, extra, batch)

    def top(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::") and top(e))


def main() -> None:
    import sys

    loaded = "--loaded" in sys.argv  # say in the results that the machine was busy
    if loaded:
        sys.argv.remove("--loaded")
    args = parse_args(__doc__, rounds=3, steps=5)
    args.loaded = loaded
    batch = make_batch(2, 16)
    kinds = ("peft LoRA r=8", "triangular r=8 (capacity 16)", "lora structure r=8 (capacity 16)")
    out = {"ops_per_step": {}, "top_ops": {}, "median_step_s": {}, "median_optimizer_step_s": {}, "tensors": {}}
    setups = {}
    for kind in kinds:
        model, params, extra = build(kind)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
        for _ in range(3):
            step(model, optimizer, extra, batch)
        ops = top_level_ops(model, optimizer, extra, batch)
        out["ops_per_step"][kind] = sum(ops.values())
        out["top_ops"][kind] = dict(ops.most_common(6))
        out["tensors"][kind] = len(params)  # trainable tensors the optimizer holds (reserved units included)
        setups[kind] = (model, optimizer, extra)
    steps = {kind: [] for kind in kinds}
    optimizer_steps = {kind: [] for kind in kinds}
    for round_index in range(args.rounds):  # interleaved, so that load on the machine hits every method alike
        for kind in (kinds if round_index % 2 == 0 else tuple(reversed(kinds))):
            model, optimizer, extra = setups[kind]
            for _ in range(args.steps):
                start = time.perf_counter()
                step(model, optimizer, extra, batch)
                steps[kind].append(time.perf_counter() - start)
                loss = model(**batch).loss + (extra() if extra is not None else 0)
                loss.backward()
                start = time.perf_counter()
                optimizer.step()
                optimizer_steps[kind].append(time.perf_counter() - start)
                optimizer.zero_grad(set_to_none=True)
    for kind in kinds:
        out["median_step_s"][kind] = statistics.median(steps[kind])
        out["median_optimizer_step_s"][kind] = statistics.median(optimizer_steps[kind])
    base = "peft LoRA r=8"
    out["ratios"] = {kind: {"ops": out["ops_per_step"][kind] / out["ops_per_step"][base],
                            "step": out["median_step_s"][kind] / out["median_step_s"][base],
                            "optimizer": out["median_optimizer_step_s"][kind] / out["median_optimizer_step_s"][base]}
                     for kind in kinds if kind != base}
    note = " (times measured while another job loaded the machine: noisy; op counts are exact)" if args.loaded else ""
    report = {**provenance(args.threads), **out, "setup": "MiniLM-L6, batch 2 x 16, 36 matrices at rank 8, AdamW fused, "
                                                          "orthogonal loss on (TriAdaptLoRA); methods interleaved" + note}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(out["ratios"], indent=2))


if __name__ == "__main__":
    main()
