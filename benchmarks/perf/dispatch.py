"""Per-step dispatch cost: top-level aten operations per training step, step time, and the optimizer step alone.

    python benchmarks/perf/dispatch.py [--rounds 3] [--steps 5] [--grow-steps 40]      (run by `nox -s bench`)

MiniLM-L6 at a dispatch-bound size (batch 2 x 16 tokens), 36 matrices at rank 8, AdamW fused,
orthogonal loss on for TriAdaptLoRA, and ``controller.step(optimizer)`` after every optimizer
step as in training (growth bookkeeping and the fresh-unit refresh, `triadapt.fresh_units`).
TriAdaptLoRA reserves a capacity of 16 units per matrix, and 4 of its 8 active units per
matrix joined after the first step, so the refresh does its young-unit bias correction.
Operations are counted with torch.profiler over one warm step; only top-level ``aten::``
operations (those not called by another aten operation) count.

A second part counts the operations of every step of a growing run (TriAdaptLoRA triangular
from rank 1, linear threshold, t0 = ΔT = 2, budget 8 per matrix) against peft LoRA r=8.
"""

from __future__ import annotations

import collections
import json
import statistics
import time

import torch

from common import BERT_TARGETS, RESULTS, base_model, make_batch, parse_args, provenance, train_step

KINDS = ("peft LoRA r=8", "triangular r=8 (capacity 16)", "lora structure r=8 (capacity 16)")


def build(kind: str):
    model = base_model()
    if kind == "peft LoRA r=8":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=BERT_TARGETS, task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None, None
    from triadapt import TriAdaptConfig, inject

    structure = "triangular" if kind.startswith("triangular") else "lora"
    config = TriAdaptConfig(structure=structure, init_rank=4, ref_rank=8, max_rank=16, threshold="fixed", fixed_k=1,
                            total_steps=10 ** 6, warmup_steps=10 ** 5, growth_interval=10 ** 5,
                            target_modules=BERT_TARGETS, seed=0, orth_reg_weight=0.1)
    ctl = inject(model, config)
    for layer in ctl.layers.values():
        layer.grow(4, step=1)  # rank 8, of which 4 units joined after optimizer step 1
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl


def growing(total_steps: int):
    from triadapt import TriAdaptConfig, inject

    model = base_model()
    ctl = inject(model, TriAdaptConfig(structure="triangular", init_rank=1, ref_rank=8, max_rank=16,
                                       threshold="linear", total_steps=total_steps, warmup_steps=2, growth_interval=2,
                                       target_modules=BERT_TARGETS, seed=0, orth_reg_weight=0.1))
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl


PHASES = ("forward", "regulariser", "backward", "AdamW", "refresh", "zero_grad")


def timed_step(model, optimizer, extra, batch, ctl=None) -> dict[str, float]:
    """One training step, each phase timed (the refresh is ``ctl.step(optimizer)``: growth bookkeeping and
    the fresh-unit correction)."""
    marks = [time.perf_counter()]
    loss = model(**batch).loss
    marks.append(time.perf_counter())
    if extra is not None:
        loss = loss + extra()
    marks.append(time.perf_counter())
    loss.backward()
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    if ctl is not None:
        ctl.step(optimizer)
    marks.append(time.perf_counter())
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    return {phase: marks[i + 1] - marks[i] for i, phase in enumerate(PHASES)}


def top_level_ops(model, optimizer, extra, batch, ctl=None) -> collections.Counter:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, optimizer, extra, batch, ctl)

    def top(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::") and top(e))


def growing_run(batch, total_steps: int) -> dict:
    """Operations of every step of a run that grows from rank 1 (events flagged)."""
    model, params, extra, ctl = growing(total_steps)
    model.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    per_step, events = [], []
    for index in range(total_steps):
        per_step.append(sum(top_level_ops(model, optimizer, extra, batch, ctl).values()))
        if ctl.events and ctl.events[-1].step == index + 1:
            events.append(index + 1)
    model, params, extra, _ = build("peft LoRA r=8")  # its first step also creates the optimizer state
    model.train()
    lora_first = sum(top_level_ops(model, torch.optim.AdamW(params, lr=1e-4, fused=True), extra, batch).values())
    return {"ops_per_step": per_step, "event_steps": events, "final_total_rank": sum(ctl.ranks.values()),
            "first_step_ops": per_step[0], "peft_lora_first_step_ops": lora_first,
            "max_ops_after_first": max(per_step[1:]), "median_ops": statistics.median(per_step)}


def main() -> None:
    import sys

    loaded = "--loaded" in sys.argv  # say in the results that the machine was busy
    if loaded:
        sys.argv.remove("--loaded")
    grow_steps = 40
    if "--grow-steps" in sys.argv:
        at = sys.argv.index("--grow-steps")
        grow_steps = int(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    args = parse_args(__doc__, rounds=3, steps=5)
    batch = make_batch(2, 16)
    out = {"ops_per_step": {}, "top_ops": {}, "median_step_s": {}, "median_optimizer_step_s": {},
           "median_adamw_step_s": {}, "median_phase_s": {}, "tensors": {}}
    setups = {}
    for kind in KINDS:
        model, params, extra, ctl = build(kind)
        model.train()
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
        for _ in range(3):
            train_step(model, optimizer, extra, batch, ctl)
        ops = top_level_ops(model, optimizer, extra, batch, ctl)
        out["ops_per_step"][kind] = sum(ops.values())
        out["top_ops"][kind] = dict(ops.most_common(6))
        out["tensors"][kind] = len(params)  # trainable tensors the optimizer holds (reserved units included)
        setups[kind] = (model, optimizer, extra, ctl)
    phases = {kind: {phase: [] for phase in PHASES} for kind in KINDS}
    for round_index in range(args.rounds):  # interleaved, so that load on the machine hits every method alike
        for kind in (KINDS if round_index % 2 == 0 else tuple(reversed(KINDS))):
            model, optimizer, extra, ctl = setups[kind]
            for _ in range(2 * args.steps):
                for phase, seconds in timed_step(model, optimizer, extra, batch, ctl).items():
                    phases[kind][phase].append(seconds)
    for kind in KINDS:
        totals = [sum(parts) for parts in zip(*phases[kind].values())]
        out["median_step_s"][kind] = statistics.median(totals)
        out["median_phase_s"][kind] = {phase: statistics.median(v) for phase, v in phases[kind].items()}
        out["median_adamw_step_s"][kind] = statistics.median(phases[kind]["AdamW"])
        out["median_optimizer_step_s"][kind] = statistics.median(
            [a + r for a, r in zip(phases[kind]["AdamW"], phases[kind]["refresh"])])
    base = "peft LoRA r=8"
    out["ratios"] = {kind: {"ops": out["ops_per_step"][kind] / out["ops_per_step"][base],
                            "step": out["median_step_s"][kind] / out["median_step_s"][base],
                            "optimizer": out["median_optimizer_step_s"][kind] / out["median_optimizer_step_s"][base],
                            "adamw": out["median_adamw_step_s"][kind] / out["median_adamw_step_s"][base]}
                     for kind in KINDS if kind != base}
    grow = growing_run(batch, grow_steps)
    grow["max_ops_after_first_over_peft_lora"] = grow["max_ops_after_first"] / out["ops_per_step"][base]
    grow["first_step_over_peft_lora_first_step"] = grow["first_step_ops"] / grow["peft_lora_first_step_ops"]
    out["growing_run"] = grow
    note = " (times measured while another job loaded the machine: noisy; op counts are exact)" if loaded else ""
    report = {**provenance(args.threads), **out,
              "setup": "MiniLM-L6, batch 2 x 16, 36 matrices at rank 8 (4 of 8 units grown after step 1), AdamW fused, "
                       "orthogonal loss on and controller.step(optimizer) after each step (TriAdaptLoRA); methods "
                       "interleaved" + note,
              "growing_setup": f"triangular from rank 1, linear threshold, T={grow_steps}, t0=ΔT=2, budget 8 per "
                               f"matrix, capacity 16; every step profiled"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({**out["ratios"], "growing: max ops after the first step / LoRA":
                      grow["max_ops_after_first_over_peft_lora"],
                      "growing: first step / LoRA first step": grow["first_step_over_peft_lora_first_step"]}, indent=2))


if __name__ == "__main__":
    main()
