"""Adapter-only Trainer checkpoints: what `TriAdaptCallback` installs so that a stock Trainer saves and resumes them.

A ``transformers.Trainer`` (and every subclass, TRL's ``SFTTrainer`` included) saves the model of a
checkpoint and of ``save_model`` through one call, ``model.save_pretrained(folder, state_dict=...,
is_main_process=...)``, and loads it back through its own methods ``_load_from_checkpoint`` (resume),
``_load_best_model`` (``load_best_model_at_end``) and ``_load_optimizer_and_scheduler`` (every resume,
DeepSpeed included). Three pieces, each on one object only, no class changed:

* `install_adapter_save` sets ``save_pretrained`` on the model *instance* to `AdapterSave`: the folder
  gets TriAdapt's own adapter (`triadapt.adapter_files`: ``triadapt_adapter.json``,
  ``adapter_model.safetensors``, ``triadapt_state.pt``) instead of the full weights. Every other
  method of the model is untouched; `remove_adapter_save` (run by ``Controller.unload``, through
  `Controller.on_unload`) puts the class's method back.
* `hook_trainer` wraps those three methods on the *trainer instance*: a folder holding a TriAdapt
  adapter and no full weights (`is_adapter_checkpoint`) is loaded in place into the already
  injected model (`load_in_place`: ranks, unit tensors, heads and the controller state), whatever
  its path; other folders go to the Trainer's own code, as before. Under DeepSpeed it also makes the
  engine that trainer builds keep the frozen base out of its own checkpoint (`_engine_keeps_adapter_only`).
* `find_trainer` finds the trainer that calls a callback, so the callback needs no argument.
* `mark_quantized_adapters` lets the Trainer accept a quantised base with TriAdapt adapters (it
  refuses a quantised model that carries no PEFT adapters).

Requires transformers; the core package does not import this module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from triadapt.adapter_files import (CONFIG_FILE, STATE_FILE, adapter_tensors, load_state, read_adapter_meta,
                                    read_tensors, save_adapter)
from triadapt.config import TriAdaptConfig
from triadapt.errors import AdapterLoadError, TriAdaptError
from triadapt.layer import UNITS_ATTR

# Files of a full model in a folder (transformers' names): their presence means "not an adapter-only checkpoint".
FULL_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                     "pytorch_model.bin.index.json")
_HOOKED = "_triadapt_hooked_by"  # trainer attribute: the controller whose checkpoints it loads
PEFT_FLAG = "_hf_peft_config_loaded"  # transformers' "adapters are attached" flag of a model
_MARKED = "_triadapt_set_peft_flag"  # model attribute: this module set PEFT_FLAG


# -- saving ---------------------------------------------------------------------------------------------------
class AdapterSave:
    """``model.save_pretrained`` while a controller drives the model: writes the TriAdapt adapter.

    Accepts the arguments of ``PreTrainedModel.save_pretrained``. ``is_main_process=False`` writes
    nothing (as the original). ``state_dict`` (what the Trainer passes under DeepSpeed, FSDP or
    SageMaker, where the live parameters may be partitioned) is where the tensors come from when it
    holds them all; otherwise they are read from the model. Formatting options of the full-model
    save (shards, variants, safe serialisation) do not apply to the adapter and are ignored;
    ``push_to_hub=True`` is refused (push the folder with ``huggingface_hub`` instead). Once the
    controller has been unloaded, the call goes to the original method, which is put back.
    """

    def __init__(self, controller: Any, model: Any):
        self.controller, self.model = controller, model

    def __call__(self, save_directory: str | os.PathLike, is_main_process: bool = True,
                 state_dict: dict[str, Any] | None = None, push_to_hub: bool = False, **kwargs: Any) -> None:
        if not self.controller.layers:  # unloaded: the plain model saves itself
            remove_adapter_save(self.model)
            return self.model.save_pretrained(save_directory, is_main_process=is_main_process,
                                              state_dict=state_dict, push_to_hub=push_to_hub, **kwargs)
        if push_to_hub:
            raise TriAdaptError("save_pretrained(push_to_hub=True) is not supported for a model with TriAdapt "
                                "adapters: save the adapter to a folder and upload the folder")
        if os.path.isfile(save_directory):
            raise TriAdaptError(f"save_pretrained({str(save_directory)!r}): is a file; pass a directory")
        if is_main_process:
            write_adapter(self.controller, save_directory, state_dict)

    def __repr__(self) -> str:
        return f"<TriAdapt adapter save of {type(self.model).__name__}>"


def install_adapter_save(controller: Any) -> None:
    """Make ``controller.model.save_pretrained`` write the TriAdapt adapter (no-op if already so)."""
    model = controller.model
    current = vars(model).get("save_pretrained")
    if isinstance(current, AdapterSave) and current.controller is controller:
        return
    if not callable(getattr(model, "save_pretrained", None)):
        return  # a plain nn.Module: the Trainer saves its state dict itself
    model.save_pretrained = AdapterSave(controller, model)
    _restore_on_unload(controller)


def remove_adapter_save(model: Any) -> None:
    """Put the class's ``save_pretrained`` back on ``model`` and clear the flag `mark_quantized_adapters` set
    (no-op for what was not done)."""
    if isinstance(vars(model).get("save_pretrained"), AdapterSave):
        del model.save_pretrained
    if vars(model).pop(_MARKED, False):
        vars(model).pop(PEFT_FLAG, None)


def mark_quantized_adapters(controller: Any) -> None:
    """Let a ``transformers.Trainer`` train a quantised model that carries TriAdapt adapters.

    The Trainer refuses a quantised model (``is_quantized``) unless transformers' flag for attached
    adapters, ``_hf_peft_config_loaded``, is set (PEFT sets it). Set it on the model instance while the
    adapters are injected; `remove_adapter_save` (run by ``controller.unload()``) clears it. Models that
    are not quantised, or already flagged, are left alone.
    """
    model = controller.model
    if not getattr(model, "is_quantized", False) or getattr(model, PEFT_FLAG, False):
        return
    setattr(model, PEFT_FLAG, True)
    vars(model)[_MARKED] = True
    _restore_on_unload(controller)


def _restore_on_unload(controller: Any) -> None:
    """``controller.unload()`` also removes the save hook and the flag (`Controller.on_unload`)."""
    controller.on_unload(_undo_on_model)


def _undo_on_model(controller: Any) -> None:
    remove_adapter_save(controller.model)


def write_adapter(controller: Any, folder: str | os.PathLike, state_dict: dict[str, Any] | None = None) -> Path:
    """Write the adapter of ``controller`` to ``folder``: as `triadapt.adapter_files.save_adapter`, but taking the
    tensors from ``state_dict`` when it holds every unit and head parameter (partitioned live parameters)."""
    keys = _state_keys(controller)
    if state_dict is None or not all(key in state_dict for key in keys):
        partitioned = [name for name, param in controller.model.named_parameters()
                       if param.requires_grad and param.numel() != getattr(param, "ds_numel", param.numel())]
        if partitioned:
            raise TriAdaptError(f"cannot save the adapter: {partitioned[0]!r} is partitioned by DeepSpeed ZeRO-3 and "
                                f"the Trainer passed no gathered state dict; set "
                                f"zero_optimization.stage3_gather_16bit_weights_on_model_save=true")
        return save_adapter(controller, folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in controller.layers.items():
        rows = state_dict[f"{name}.{UNITS_ATTR}"]
        if tuple(rows.shape) != (layer.capacity, layer.layout.width):
            raise TriAdaptError(f"state_dict[{name + '.' + UNITS_ATTR!r}] has shape {tuple(rows.shape)}, expected "
                                f"{(layer.capacity, layer.layout.width)} (a partitioned tensor?)")
        for index in range(layer.rank):
            for key, tensor in layer.unit(index, rows=rows).items():
                tensors[f"{name}.{UNITS_ATTR}.{index}.{key}"] = tensor
    for head in controller.heads:
        for key, _ in controller.model.get_submodule(head).named_parameters():
            tensors[f"{head}.{key}"] = state_dict[f"{head}.{key}"]
    return save_adapter(controller, folder, tensors)


def _state_keys(controller: Any) -> list[str]:
    keys = [f"{name}.{UNITS_ATTR}" for name in controller.layers]
    for head in controller.heads:
        keys += [f"{head}.{key}" for key, _ in controller.model.get_submodule(head).named_parameters()]
    return keys


# -- loading --------------------------------------------------------------------------------------------------
def is_adapter_checkpoint(folder: str | os.PathLike | None) -> bool:
    """True for a folder with a TriAdapt adapter and no full model weights."""
    if folder is None:
        return False
    path = Path(folder)
    return (path / CONFIG_FILE).is_file() and not any((path / name).is_file() for name in FULL_WEIGHT_FILES)


def load_in_place(controller: Any, folder: str | os.PathLike, *, weights: bool = True, state: bool = True) -> None:
    """Load the adapter saved in ``folder`` into the model ``controller`` already drives.

    Sets every layer's rank to the saved one and copies the saved unit and head tensors into the
    live parameters (the optimizer keeps the same parameter objects); with ``state`` also restores
    the controller state (step count, scorer, growth events). Everything is read and checked
    against the controller first (layers and their shapes, structure, capacity, tensor keys and
    shapes), so a mismatch raises `AdapterLoadError` before the model changes. ``weights=False``
    restores ranks and state only (DeepSpeed loads the tensors from its own checkpoint).
    """
    path = Path(folder)
    meta = read_adapter_meta(path)
    file = path / CONFIG_FILE
    if meta.get("model_type") != controller.model_type:
        raise AdapterLoadError(f"{path}: adapter was trained on model_type={meta.get('model_type')!r}, this model has "
                               f"model_type={controller.model_type!r}")
    shapes = {name: [layer.in_features, layer.out_features] for name, layer in controller.layers.items()}
    if meta["shapes"] != shapes:
        missing, extra = sorted(set(meta["shapes"]) - set(shapes)), sorted(set(shapes) - set(meta["shapes"]))
        differ = sorted(n for n in set(shapes) & set(meta["shapes"]) if list(meta["shapes"][n]) != shapes[n])
        raise AdapterLoadError(f"{path}: the checkpoint's adapters do not match this model's: layers missing here "
                               f"{missing[:3]}, layers the checkpoint does not know {extra[:3]}, other shapes "
                               f"{differ[:3]}")
    try:
        saved = TriAdaptConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterLoadError(f"{file}: the saved config is invalid ({exc})") from None
    if saved.structure != controller.config.structure:
        raise AdapterLoadError(f"{file}: structure={saved.structure!r}, the running adapters have "
                               f"structure={controller.config.structure!r}")
    ranks = meta["rank_pattern"]
    for name, layer in controller.layers.items():
        rank = ranks.get(name)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= layer.capacity:
            raise AdapterLoadError(f"{file}: rank_pattern[{name!r}]={rank!r} is invalid here: must be an integer in "
                                   f"[0, {layer.capacity}] (the running adapters' capacity)")
    loaded = None
    if weights:
        expected = {f"{name}.{UNITS_ATTR}.{index}.{key}": shape for name, layer in controller.layers.items()
                    for index in range(ranks[name]) for key, shape in layer.layout.shapes[index].items()}
        for head in controller.heads:
            for key, param in controller.model.get_submodule(head).named_parameters(prefix=head):
                expected[key] = tuple(param.shape)
        loaded = read_tensors(path, expected)
    saved_state = None
    if state:
        saved_state = load_state(path / STATE_FILE)
        state_ranks = saved_state.get("allocator", {}).get("ranks")
        if state_ranks != ranks:
            raise AdapterLoadError(f"{path / STATE_FILE}: its ranks differ from {CONFIG_FILE}'s rank_pattern; the "
                                   f"checkpoint is inconsistent")
    for name, layer in controller.layers.items():
        layer.set_rank(ranks[name])
    if loaded is not None:
        with torch.no_grad():
            for key, target in adapter_tensors(controller).items():
                target.copy_(loaded[key])
    if saved_state is not None:
        controller.load_state_dict(saved_state)


# -- the trainer ----------------------------------------------------------------------------------------------
def find_trainer(callback: Any, depth: int = 64) -> Any:
    """The ``transformers.Trainer`` whose callback handler holds ``callback`` and that is calling it now, or None.

    A callback event receives the model, the optimizer and the data loaders, not the trainer; the
    trainer is the ``self`` of a calling frame (``Trainer.__init__`` for ``on_init_end``, the training
    loop for ``on_train_begin``). Only a trainer that lists this very callback is taken.
    """
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            handler = getattr(owner, "callback_handler", None)
            if any(cb is callback for cb in getattr(handler, "callbacks", ())):
                return owner
        frame = frame.f_back
    return None


def hook_trainer(trainer: Any, controller: Any, resumed: Callable[[str], None]) -> None:
    """Let ``trainer`` load TriAdapt checkpoints of ``controller`` (wraps three methods of this instance).

    * ``_load_from_checkpoint(path)``: an adapter-only checkpoint is loaded in place (`load_in_place`)
      and ``resumed(path)`` is called; any other folder goes to the Trainer's code.
    * ``_load_optimizer_and_scheduler(path)``: calls ``resumed(path)`` (under DeepSpeed, which loads
      the model from its own checkpoint, the only resume call that sees the path), then the original.
    * ``_load_best_model()``: an adapter-only best checkpoint is loaded in place; DeepSpeed loads the
      tensors itself, then ranks and controller state come from the TriAdapt files.
    """
    if getattr(trainer, _HOOKED, None) is controller:
        return
    load_checkpoint = trainer._load_from_checkpoint
    load_optimizer = trainer._load_optimizer_and_scheduler
    load_best = trainer._load_best_model

    def _load_from_checkpoint(resume_from_checkpoint: str, model: Any = None) -> None:
        if is_adapter_checkpoint(resume_from_checkpoint):
            if getattr(trainer, "is_fsdp_enabled", False):
                raise TriAdaptError(f"{resume_from_checkpoint}: resuming a TriAdapt checkpoint under FSDP is not "
                                    f"supported (the adapter would be copied into sharded parameters)")
            load_in_place(controller, resume_from_checkpoint)
            resumed(str(resume_from_checkpoint))
            return None
        return load_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(checkpoint: str | None) -> None:
        if checkpoint is not None:
            resumed(str(checkpoint))
        return load_optimizer(checkpoint)

    def _load_best_model() -> None:
        best = trainer.state.best_model_checkpoint
        if not (best and (Path(best) / CONFIG_FILE).is_file()):
            return load_best()
        if getattr(trainer, "is_deepspeed_enabled", False):
            load_best()
            load_in_place(controller, best, weights=False)
        elif is_adapter_checkpoint(best):
            load_in_place(controller, best)
        else:
            load_best()
            load_in_place(controller, best, weights=False)
        return None

    trainer._load_from_checkpoint = _load_from_checkpoint
    trainer._load_optimizer_and_scheduler = _load_optimizer_and_scheduler
    trainer._load_best_model = _load_best_model
    _engine_keeps_adapter_only(trainer)
    setattr(trainer, _HOOKED, controller)


def _engine_keeps_adapter_only(trainer: Any) -> None:
    """Under DeepSpeed, the engine's own checkpoint (``global_stepN/``) leaves the frozen base out, as the Trainer
    does for PEFT models: ``save_checkpoint(exclude_frozen_parameters=True)`` and a non-strict module load, set on
    the engine this trainer's accelerator builds (wrapping its ``prepare`` on this accelerator instance)."""
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or not getattr(trainer, "is_deepspeed_enabled", False):
        return
    prepare = accelerator.prepare

    def prepare_then_hook(*args: Any, **kwargs: Any) -> Any:
        result = prepare(*args, **kwargs)
        wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
        engine = getattr(wrapped, "engine", None)
        if engine is not None and not getattr(engine, "_triadapt_adapter_only", False):
            save, load = engine.save_checkpoint, engine.load_checkpoint

            def save_checkpoint(save_dir: Any, *a: Any, **kw: Any) -> Any:
                kw["exclude_frozen_parameters"] = True
                return save(save_dir, *a, **kw)

            def load_checkpoint(load_dir: Any, *a: Any, **kw: Any) -> Any:
                kw["load_module_strict"] = False  # the frozen base is not in the checkpoint: it is already loaded
                return load(load_dir, *a, **kw)

            engine.save_checkpoint, engine.load_checkpoint = save_checkpoint, load_checkpoint
            engine._triadapt_adapter_only = True
        return result

    accelerator.prepare = prepare_then_hook
