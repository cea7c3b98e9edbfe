"""Inference latency: a merged TriAdaptLoRA adapter vs the bare base model (MiniLM, CPU, eval mode).

Both models are timed interleaved on the same batch; the merged model must cost what the
base costs (merge folds ΔW into the base weights and unloads the adapter layers).

    python benchmarks/perf/inference.py [--rounds 10]
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from common import RESULTS, base_model, make_batch, parse_args, provenance
from triadapt import TriAdaptConfig, inject


def merged_model():
    model = base_model()
    ctl = inject(model, TriAdaptConfig(init_rank=8, ref_rank=8, threshold="none", seed=0))
    with torch.no_grad():
        for layer in ctl.layers.values():
            for i in range(layer.capacity):
                layer.unit(i)["b"].normal_(std=0.02)  # a non-trivial update
    return ctl.unload(merge=True)


@torch.no_grad()
def latency(model, batch, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args(__doc__, rounds=10)
    batch = {k: v for k, v in make_batch().items() if k != "labels"}
    models = {"base": base_model().eval(), "merged TriAdaptLoRA": merged_model().eval()}
    for model in models.values():
        latency(model, batch, 2)
    samples = {name: [] for name in models}
    for round_index in range(args.rounds):
        for name in (models if round_index % 2 == 0 else reversed(list(models))):
            samples[name] += latency(models[name], batch, 3)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    report = {**provenance(args.threads), "setup": "MiniLM-L6, batch 32, seq 64, eval, no grad",
              "median_forward_s": medians, "merged_over_base": medians["merged TriAdaptLoRA"] / medians["base"],
              "forwards_per_model": len(samples["base"])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
