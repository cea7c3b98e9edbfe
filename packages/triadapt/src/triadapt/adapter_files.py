"""The files of a saved adapter: safetensors for tensors, JSON for the config and rank pattern.

A saved adapter holds only the *active* units of each matrix (plus the trained heads)
and ``triadapt_adapter.json``: the config, the rank pattern, and each target's shape, so
that loading into a different base model fails with a clear message. The controller
state (allocator and scorer, which may hold tensors) goes to ``triadapt_state.pt``.

Writing and reading the files lives here, below the controller (``Controller.save`` writes
through it); `triadapt.persistence` builds a controller from them (``load_adapter``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from triadapt.errors import AdapterLoadError, TriAdaptError
from triadapt.layer import UNITS_ATTR

CONFIG_FILE = "triadapt_adapter.json"
STATE_FILE = "triadapt_state.pt"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1


def adapter_tensors(controller: Any) -> dict[str, Tensor]:
    """Active unit tensors and head tensors, keyed as in the model's state dict."""
    tensors: dict[str, Tensor] = {}
    for name, layer in controller.layers.items():
        for index, unit in enumerate(layer.active_unit_tensors()):
            for key, tensor in unit.items():
                tensors[f"{name}.{UNITS_ATTR}.{index}.{key}"] = tensor.detach()
    for head in controller.heads:
        for key, param in controller.model.get_submodule(head).named_parameters():
            tensors[f"{head}.{key}"] = param.detach()
    return tensors


def save_adapter(controller: Any, path: str | os.PathLike, tensors: dict[str, Tensor] | None = None) -> Path:
    """Write the adapter to directory ``path`` (created if needed).

    ``tensors``: the `adapter_tensors` keys with their values taken elsewhere (a gathered state dict of
    parameters that DeepSpeed ZeRO-3 partitions); default: read from the live parameters.
    """
    if any(layer.merged for layer in controller.layers.values()):
        raise TriAdaptError("cannot save merged adapters: unmerge() first (a merged base is saved by the model)")
    expected = adapter_tensors(controller)
    if tensors is not None and set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise TriAdaptError(f"save_adapter(tensors=...): the keys must be the adapter's: missing {missing[:3]}, "
                            f"unexpected {extra[:3]}")
    tensors = expected if tensors is None else tensors
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt", "triadapt_format": str(FORMAT_VERSION)})
    meta = {
        "format_version": FORMAT_VERSION,
        "config": controller.config.to_dict(),
        "model_type": controller.model_type,
        "rank_pattern": controller.ranks,
        "shapes": {name: [layer.in_features, layer.out_features] for name, layer in controller.layers.items()},
        "heads": controller.heads,
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    save_state(controller.state_dict(), out / STATE_FILE)
    return out


def read_adapter_meta(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise AdapterLoadError(f"{file}: not found; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterLoadError(f"{file}: invalid JSON ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdapterLoadError(f"{file}: format_version={meta.get('format_version')!r} is not supported "
                               f"(this triadapt reads version {FORMAT_VERSION})")
    missing = [key for key in ("config", "rank_pattern", "shapes") if not isinstance(meta.get(key), dict)]
    if missing:
        raise AdapterLoadError(f"{file}: {missing[0]!r} is missing or not a mapping; the file is damaged")
    return meta


def read_tensors(path: Any, expected: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """The saved tensors of the adapter in ``path``, checked to be exactly ``expected`` (keys and shapes)."""
    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise AdapterLoadError(f"{file}: not found")
    try:
        loaded = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise AdapterLoadError(f"{file}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    missing, extra = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or extra:
        raise AdapterLoadError(f"{file}: tensors do not match the rank pattern: missing {missing[:3]}, "
                               f"unexpected {extra[:3]}")
    for key, shape in expected.items():
        if tuple(loaded[key].shape) != tuple(shape):
            raise AdapterLoadError(f"{file}: tensor {key!r} has shape {tuple(loaded[key].shape)}, "
                                   f"expected {tuple(shape)}")
    return loaded


def save_state(state: dict[str, Any], file: Path) -> None:
    """Write a controller state atomically (plain containers and tensors, loadable with weights_only)."""
    partial = file.with_name(file.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, file)


def load_state(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise AdapterLoadError(f"{file}: not found; cannot restore the controller state")
    return torch.load(file, map_location="cpu", weights_only=True)
