"""Load adapters: `load_adapter` injects adapters as saved and loads their tensors strictly.

Loading is strict: every expected tensor must be present with its shape, and nothing else.
The file format and its writer live in `triadapt.adapter_files` (below the controller, which
saves through it); its names stay importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triadapt.adapter_files import (CONFIG_FILE, FORMAT_VERSION, STATE_FILE, WEIGHTS_FILE, adapter_tensors,
                                    load_state, read_adapter_meta, read_tensors, save_adapter, save_state)
from triadapt.config import TriAdaptConfig
from triadapt.controller import inject, restore_model
from triadapt.errors import AdapterLoadError
from triadapt.layer import UNITS_ATTR
from triadapt.planning import plan_injection

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "STATE_FILE", "WEIGHTS_FILE", "adapter_tensors", "load_adapter",
           "load_state", "read_adapter_meta", "read_tensors", "save_adapter", "save_state"]


def load_adapter(model: nn.Module, path: str | os.PathLike, *, resume_state: bool = False) -> Any:
    """Inject adapters as saved at ``path`` into ``model`` and load their tensors strictly.

    Each layer gets its saved rank (its reserved capacity is the saved config's). With
    ``resume_state`` the controller also gets the saved allocator state back. Atomic: the
    files are read and checked against the model before it is touched, and a failure after
    that puts the model back as it was (layers, ``requires_grad`` flags, head weights).
    """
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


