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


def load_adapter(model: nn.Module, path: str | os.PathLike, *, resume_state: bool = False) -> Any:
    """Inject adapters as saved at ``path`` into ``model`` and load their tensors strictly.

    Each layer gets its saved rank (its reserved capacity is the saved config's). With
    ``resume_state`` the controller also gets the saved allocator state back. Atomic: the
    files are read and checked against the model before it is touched, and a failure after
    that puts the model back as it was (layers, ``requires_grad`` flags, head weights).
    """
    from triadapt.controller import inject, restore_model
    from triadapt.planning import plan_injection

    meta = read_adapter_meta(path)
    config = _saved_config(path, meta)
    saved_type, this_type = meta.get("model_type"), getattr(getattr(model, "config", None), "model_type", None)
    if saved_type != this_type:
        raise AdapterLoadError(f"{path}: adapter was trained on model_type={saved_type!r}, this model has "
                               f"model_type={this_type!r}")
    plan = plan_injection(model, config)
    _check_layers(path, meta, plan.targets)
    ranks = _rank_pattern(path, meta, plan)
    loaded = read_tensors(path, _expected_shapes(model, plan, ranks))
    state = load_state(Path(path) / STATE_FILE) if resume_state else None
    flags = [(param, param.requires_grad) for param in model.parameters()]
    heads = {key: param.detach().clone() for head in plan.heads
             for key, param in model.get_submodule(head).named_parameters(prefix=head)}
    controller = inject(model, config)
    try:
        for name, rank in ranks.items():
            controller.layers[name].set_rank(rank)
        with torch.no_grad():
            for key, target in adapter_tensors(controller).items():
                target.copy_(loaded[key].to(target.dtype))
        if state is not None:
            controller.load_state_dict(state)
        else:
            controller.allocator.scorer.initialize(controller.layers)
    except BaseException:
        restore_model(model, controller.layers, flags)
        with torch.no_grad():
            for key, param in model.named_parameters():
                if key in heads:
                    param.copy_(heads[key])
        raise
    return controller


def _saved_config(path: Any, meta: dict[str, Any]) -> TriAdaptConfig:
    try:
        return TriAdaptConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterLoadError(f"{Path(path) / CONFIG_FILE}: the saved config is invalid ({exc})") from None


def _check_layers(path: Any, meta: dict[str, Any], targets: dict[str, tuple[int, int]]) -> None:
    saved, found = set(meta["shapes"]), set(targets)
    if saved != found:
        missing, extra = sorted(saved - found), sorted(found - saved)
        raise AdapterLoadError(f"{path}: base model does not match the adapter: layers missing here {missing[:3]}, "
                               f"layers the adapter does not know {extra[:3]}")
    for name, here in targets.items():  # in module order
        n_in, n_out = meta["shapes"][name]
        if tuple(here) != (n_in, n_out):
            raise AdapterLoadError(f"{path}: base model does not match the adapter: layer {name!r} is "
                                   f"{here[0]}->{here[1]} here, {n_in}->{n_out} in the adapter")


def _rank_pattern(path: Any, meta: dict[str, Any], plan: Any) -> dict[str, int]:
    pattern = meta.get("rank_pattern")
    file = Path(path) / CONFIG_FILE
    if not isinstance(pattern, dict) or set(pattern) != set(plan.targets):
        raise AdapterLoadError(f"{file}: rank_pattern must name every adapted layer once")
    capacity = plan.config.capacity
    for name, rank in pattern.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= capacity:
            raise AdapterLoadError(f"{file}: rank_pattern[{name!r}]={rank!r} is invalid: must be an integer in "
                                   f"[0, {capacity}] (the saved capacity)")
    return {name: int(pattern[name]) for name in plan.targets}


def _expected_shapes(model: nn.Module, plan: Any, ranks: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The saved file's keys and shapes for this model: active units at the saved ranks, then the heads."""
    shapes = {f"{name}.{UNITS_ATTR}.{key}": shape for name, rank in ranks.items()
              for key, shape in plan.unit_shapes(name, rank).items()}
    for head in plan.heads:
        for key, param in model.get_submodule(head).named_parameters(prefix=head):
            shapes[key] = tuple(param.shape)
    return shapes


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
