"""Peak memory of one training step per method, each in a fresh process (CPU: peak RSS).

For every method a child process loads MiniLM, builds the method, runs 3 training steps
and reports the growth of its peak resident set size over the loaded base model, plus the
trainable and (for TriAdapt) reserved adapter parameter counts.

    python benchmarks/perf/memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch

from common import RESULTS, Setup, full_finetune, make_batch, peft_adalora, peft_lora, provenance, triadapt

METHODS = {
    "triangular r=8 (capacity 16)": lambda: triadapt_growing(),
    "triangular r=8": triadapt("triangular", 8),
    "peft LoRA r=8": peft_lora(8),
    "peft AdaLoRA": peft_adalora(),
    "full fine-tuning": full_finetune,
}


def triadapt_growing():
    """Active rank 8 with a capacity of 16 reserved per matrix, as a growing run has."""
    from common import base_model
    from triadapt import TriAdaptConfig, inject

    model = base_model()
    ctl = inject(model, TriAdaptConfig(init_rank=4, ref_rank=8, max_rank=16, threshold="none", seed=0))
    for layer in ctl.layers.values():
        layer.grow(4, step=1)  # rank 8, the upper 4 units joined after step 1
    return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl


def child(name: str) -> None:
    torch.set_num_threads(2)
    import transformers  # noqa: F401  (libraries loaded before the baseline is taken)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    setup = Setup(METHODS[name])  # loads the model and builds the method
    setup.steps(make_batch(), 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state = sum(p.numel() * p.element_size() * 3 for g in setup.optimizer.param_groups for p in g["params"])
    print(json.dumps({"peak_rss_growth_mib": (peak - before) / 1024, "trainable": setup.trainable,
                      "grad_and_adam_state_mib": state / 2**20}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    results = {}
    for name in METHODS:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    report = {**provenance(2), "setup": "MiniLM-L6, batch 32, seq 64, AdamW, 3 steps; peak RSS growth from model "
                                        "load to the end of 3 steps, a fresh process per method; gradient + AdamW "
                                        "state counted exactly (3 × 4 bytes per trainable parameter)", "methods": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
