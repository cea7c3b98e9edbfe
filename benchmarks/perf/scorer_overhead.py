"""Per-step importance cost: TriAdapt's Frobenius scorer vs the sensitivity plugin vs peft AdaLoRA.

All on MiniLM (CPU, batch 32, seq 64), in one process, interleaved round by round. For each
method the script times the training step (forward, backward, AdamW) and, separately, the
allocation call made after it:

* ``fnorm``: ``controller.step()`` — integer bookkeeping every step, O(r²) scores only at a
  growth event; the event time is amortised over the growth interval ΔT;
* ``sensitivity``: ``controller.step()`` with the plugin scorer, which updates two EMAs of
  |w·∇w| for every active adapter entry every step;
* ``peft AdaLoRA``: ``model.base_model.update_and_allocate(step)`` inside its budgeting
  phase (sensitivity EMAs every step, masking every ``deltaT``).

    python benchmarks/perf/scorer_overhead.py [--rounds 5] [--steps 4]
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from common import RESULTS, base_model, make_batch, parse_args, peft_adalora, provenance
from triadapt import TriAdaptConfig, inject

INTERVAL = 100  # ΔT used to amortise one growth event per step


def triadapt_setup(scorer: str):
    model = base_model()
    ctl = inject(model, TriAdaptConfig(scorer=scorer, init_rank=8, ref_rank=9, max_rank=12, warmup_steps=0,
                                       growth_interval=10_000, total_steps=100_000, seed=0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-4, fused=True)
    return model, optimizer, ctl.step, ctl


def adalora_setup():
    model = peft_adalora()()[0]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    counter = {"step": 0}

    def allocate():
        counter["step"] += 1
        model.base_model.update_and_allocate(counter["step"])

    return model, optimizer, allocate, None


def measure(setup, batch, steps):
    model, optimizer, allocate, _ = setup
    model.train()
    step_times, alloc_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        middle = time.perf_counter()
        allocate()  # gradients are still present, as in real loops
        end = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(middle - start)
        alloc_times.append(end - middle)
    return step_times, alloc_times


def run_fraction(steps: int = 40, interval: int = 4) -> dict[str, float]:
    """Share of a real growing run spent in allocation: ``controller.step()`` time over all step time."""
    model = base_model()
    ctl = inject(model, TriAdaptConfig(warmup_steps=interval, growth_interval=interval, total_steps=steps, seed=0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-4, fused=True)
    batch, train_time, alloc_time = make_batch(32, 64), 0.0, 0.0
    for _ in range(steps):
        start = time.perf_counter()
        (model(**batch).loss + ctl.orthogonal_loss()).backward()
        optimizer.step()
        middle = time.perf_counter()
        ctl.step()
        alloc_time += time.perf_counter() - middle
        optimizer.zero_grad(set_to_none=True)
        train_time += middle - start
    return {"steps": steps, "growth_interval": interval, "events": len(ctl.events), "allocation_s": alloc_time,
            "training_s": train_time, "fraction": alloc_time / (alloc_time + train_time)}


def event_time(repeats: int = 10) -> float:
    samples = []
    for _ in range(repeats):
        ctl = inject(base_model(), TriAdaptConfig(warmup_steps=0, growth_interval=1, total_steps=10, seed=0))
        start = time.perf_counter()
        ctl.allocator.maybe_grow(1)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    args = parse_args(__doc__, rounds=5, steps=4)
    from triadapt.plugins import Registry, use_registry

    use_registry(Registry(entry_points=True))  # the sensitivity scorer comes from its plugin
    batch = make_batch(32, 64)
    setups = {"triadapt fnorm": triadapt_setup("fnorm"), "triadapt sensitivity": triadapt_setup("sensitivity"),
              "peft AdaLoRA": adalora_setup()}
    for setup in setups.values():
        measure(setup, batch, 2)  # warm-up
    steps = {name: [] for name in setups}
    allocs = {name: [] for name in setups}
    for round_index in range(args.rounds):
        order = list(setups) if round_index % 2 == 0 else list(reversed(setups))
        for name in order:
            s, a = measure(setups[name], batch, args.steps)
            steps[name] += s
            allocs[name] += a
    event = event_time()
    per_step = {name: statistics.fmean(v) for name, v in allocs.items()}  # mean: periodic work counts
    per_step["triadapt fnorm"] += event / INTERVAL  # one growth event every ΔT steps, amortised
    train_step = {name: statistics.median(v) for name, v in steps.items()}
    report = {
        **provenance(args.threads), "run_fraction": run_fraction(),
        "setup": "MiniLM-L6, batch 32, seq 64, CPU, AdamW; allocation call timed after optimizer.step()",
        "median_train_step_s": train_step,
        "mean_allocation_per_step_s": per_step,
        "fnorm_event_s": event, "amortised_over_steps": INTERVAL,
        "allocation_fraction_of_step": {n: per_step[n] / train_step[n] for n in setups},
        "adalora_over_fnorm": per_step["peft AdaLoRA"] / per_step["triadapt fnorm"],
        "sensitivity_over_fnorm": per_step["triadapt sensitivity"] / per_step["triadapt fnorm"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scorer_overhead.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("mean_allocation_per_step_s", "adalora_over_fnorm",
                                             "sensitivity_over_fnorm", "run_fraction")}, indent=2))


if __name__ == "__main__":
    main()
