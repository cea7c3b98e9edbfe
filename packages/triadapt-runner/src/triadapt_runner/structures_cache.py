"""Model structures for the preflight: module names, adaptable layers and their shapes, no weights.

`triadapt.plan_injection` reads only a model's module names, which modules are ``nn.Linear``
or GPT-2 ``Conv1D`` with their shapes, and ``config.model_type`` (the task kinds' checks read
``config.max_position_embeddings``). Building the model on the
``meta`` device gives that, but costs about 2 s of transformers imports per command. The
structure is a function of the model folder's ``config.json``, the task kind's model class
and overrides, and the transformers version, so it is cached under that key in
``$TRIADAPT_CACHE/structures/`` and rebuilt from there as a tree of empty ``meta`` modules.
Hub names (no local ``config.json``) are not cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from triadapt.layer import is_conv1d
from triadapt_runner.tasks.data.builtin import cache_dir

FORMAT = 2
CONFIG_KEYS = ("model_type", "max_position_embeddings")  # what the checks read of a model's config


class Conv1D(nn.Module):
    """A weightless stand-in for transformers' GPT-2 ``Conv1D`` (weight stored as (in, out))."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.nf = n_out
        self.weight = nn.Parameter(torch.empty(n_in, n_out, device="meta"))


def meta_model(kind: Any, path: str, task: Any) -> nn.Module:
    """The model's structure on the meta device, from the cache when the same structure was built before."""
    key = _key(kind, path, task)
    file = cache_dir() / "structures" / f"{key}.json" if key else None
    if file is not None and file.is_file():
        try:
            return skeleton(json.loads(file.read_text()))
        except (ValueError, KeyError, TypeError):
            file.unlink(missing_ok=True)  # a damaged cache entry: rebuild it
    model = kind.build_model(path, task, meta=True)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(".partial")
        partial.write_text(json.dumps(describe(model)))
        partial.replace(file)
    return model


def _key(kind: Any, path: str, task: Any) -> str | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    parts = [str(FORMAT), config.read_text(), kind.auto_model, json.dumps(kind.model_kwargs(task), sort_keys=True),
             md.version("transformers")]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def describe(model: nn.Module) -> dict[str, Any]:
    """Names in module order, each with its kind and (for adaptable layers) (in, out) features."""
    modules = []
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, nn.Linear):
            modules.append([name, "linear", module.in_features, module.out_features])
        elif is_conv1d(module):
            modules.append([name, "conv1d", *module.weight.shape])
        else:
            modules.append([name, "module", 0, 0])
    config = getattr(model, "config", None)
    return {"format": FORMAT, "config": {key: getattr(config, key, None) for key in CONFIG_KEYS}, "modules": modules}


def skeleton(description: dict[str, Any]) -> nn.Module:
    """A tree of empty meta modules with the described names, kinds and shapes."""
    if description.get("format") != FORMAT:
        raise ValueError("another cache format")
    root = nn.Module()
    root.config = SimpleNamespace(**description["config"])
    for name, kind, n_in, n_out in description["modules"]:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        if kind == "linear":
            module: nn.Module = nn.Linear(n_in, n_out, device="meta")
        elif kind == "conv1d":
            module = Conv1D(n_in, n_out)
        else:
            module = nn.Module()
        parent.add_module(child, module)
    return root
