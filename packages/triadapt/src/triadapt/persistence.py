"""Save and load adapters: safetensors for tensors, JSON for the config and rank pattern.

A saved adapter holds only the *active* units of each matrix (plus the trained heads)
and ``triadapt_adapter.json``: the config, the rank pattern, and each target's shape, so
that loading into a different base model fails with a clear message. Loading is strict:
every expected tensor must be present with its shape, and nothing else. The controller
state (allocator and scorer, which may hold tensors) goes to ``triadapt_state.pt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from triadapt.config import TriAdaptConfig
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
        for index, unit in enumerate(layer.active_units()):
            for key, param in unit.named_parameters():
                tensors[f"{name}.{UNITS_ATTR}.{index}.{key}"] = param.detach()
    for head in controller.heads:
        for key, param in controller.model.get_submodule(head).named_parameters():
            tensors[f"{head}.{key}"] = param.detach()
    return tensors


def save_adapter(controller: Any, path: str | os.PathLike) -> Path:
    """Write the adapter to directory ``path`` (created if needed)."""
    if any(layer.merged for layer in controller.layers.values()):
        raise TriAdaptError("cannot save merged adapters: unmerge() first (a merged base is saved by the model)")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in adapter_tensors(controller).items()}
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
    return meta


def load_adapter(model: nn.Module, path: str | os.PathLike, *, resume_state: bool = False) -> Any:
    """Inject adapters as saved at ``path`` into ``model`` and load their tensors strictly.

    Each layer gets its saved rank (its reserved capacity is the saved config's). With
    ``resume_state`` the controller also gets the saved allocator state back.
    """
    from triadapt.controller import inject

    meta = read_adapter_meta(path)
    config = TriAdaptConfig.from_dict(meta["config"])
    saved_type, this_type = meta.get("model_type"), getattr(getattr(model, "config", None), "model_type", None)
    if saved_type != this_type:
        raise AdapterLoadError(f"{path}: adapter was trained on model_type={saved_type!r}, this model has "
                               f"model_type={this_type!r}")
    controller = inject(model, config)
    _check_layers(path, meta, controller)
    for name, rank in meta["rank_pattern"].items():
        controller.layers[name].set_rank(int(rank))
    _load_tensors(path, controller)
    if resume_state:
        controller.load_state_dict(load_state(Path(path) / STATE_FILE))
    else:
        controller.allocator.scorer.initialize(controller.layers)
    return controller


def _check_layers(path: Any, meta: dict[str, Any], controller: Any) -> None:
    saved, found = set(meta["shapes"]), set(controller.layers)
    if saved != found:
        missing, extra = sorted(saved - found), sorted(found - saved)
        raise AdapterLoadError(f"{path}: base model does not match the adapter: layers missing here {missing[:3]}, "
                               f"layers the adapter does not know {extra[:3]}")
    for name, (n_in, n_out) in meta["shapes"].items():
        layer = controller.layers[name]
        if (layer.in_features, layer.out_features) != (n_in, n_out):
            raise AdapterLoadError(f"{path}: base model does not match the adapter: layer {name!r} is "
                                   f"{layer.in_features}->{layer.out_features} here, {n_in}->{n_out} in the adapter")


def _load_tensors(path: Any, controller: Any) -> None:
    file = Path(path) / WEIGHTS_FILE
    if not file.is_file():
        raise AdapterLoadError(f"{file}: not found")
    try:
        loaded = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise AdapterLoadError(f"{file}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    expected = adapter_tensors(controller)
    missing, extra = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or extra:
        raise AdapterLoadError(f"{file}: tensors do not match the rank pattern: missing {missing[:3]}, "
                               f"unexpected {extra[:3]}")
    with torch.no_grad():
        for key, target in expected.items():
            if loaded[key].shape != target.shape:
                raise AdapterLoadError(f"{file}: tensor {key!r} has shape {tuple(loaded[key].shape)}, "
                                       f"expected {tuple(target.shape)}")
            target.copy_(loaded[key].to(target.dtype))


def save_state(state: dict[str, Any], file: Path) -> None:
    """Write a controller state atomically (plain containers and tensors, loadable with weights_only)."""
    partial = file.with_name(file.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, file)


def load_state(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise AdapterLoadError(f"{file}: not found; cannot restore the controller state")
    return torch.load(file, map_location="cpu", weights_only=True)
