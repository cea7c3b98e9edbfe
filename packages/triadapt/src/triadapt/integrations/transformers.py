"""`transformers.Trainer` integration: a stock Trainer (or TRL's ``SFTTrainer``) grows ranks with no user glue.

    ctl = triadapt.inject(model, config)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[TriAdaptCallback(ctl)])
    trainer.train()                      # or trainer.train(resume_from_checkpoint=".../checkpoint-500")
    trainer.save_model("adapter")        # a TriAdapt adapter: triadapt.load(fresh_model, "adapter")

* ``on_init_end`` (inside the Trainer's constructor) makes ``model.save_pretrained`` write the
  TriAdapt adapter instead of the full weights, so checkpoints and ``save_model`` hold the adapter,
  the controller state and (checkpoints) the Trainer's own state, not the base weights; and lets
  this trainer load such checkpoints in place, from any path (`triadapt.integrations.trainer_checkpoints`).
  Under DeepSpeed ZeRO-3 it also does what TRL does for PEFT adapters (see `_prepare_zero3`); on a
  quantised base it keeps the rank units in their own dtype (see `_keep_unit_dtype`).
* ``on_train_begin`` sets T = ``state.max_steps``, validates the schedule, checks that a resumed
  run got its controller state back, and with gradient checkpointing makes the input embeddings'
  output require grad (the frozen base gives checkpointed blocks no input that does).
* ``on_step_begin`` (gradients are zero then, before the first micro-batch of the step)
  back-propagates λ·R of the orthogonal regulariser once, at every step (the first of a
  ``train()`` call and the first after an evaluation included, so a resumed run equals the
  uninterrupted one). Gradients add up, so this equals adding λ·R to the loss of the optimizer
  step, gradient clipping included. DeepSpeed allows one gradient per step: with it the
  regulariser must be off (``orth_reg_weight=0``), which ``on_init_end`` checks.
* ``on_optimizer_step`` (right after ``optimizer.step()``, before the LR scheduler steps) calls
  ``controller.step(optimizer)``: growth follows optimizer steps, whatever
  ``gradient_accumulation_steps`` is, and grown units stay as fresh as new parameters in the
  Trainer's optimizer (`triadapt.fresh_units`), under DeepSpeed in its fp32 copies
  (`triadapt.zero_shares`, set up in ``on_train_begin``). ``on_step_end`` checks that the
  controller counted the Trainer's steps.
* ``on_save`` makes sure the checkpoint holds the controller state (``save_pretrained`` wrote it
  already unless the model is not a ``PreTrainedModel``).

Constructing the callback also lets the Trainer accept a quantised (bitsandbytes 4/8-bit) base
that carries the adapters (`triadapt.integrations.trainer_checkpoints.mark_quantized_adapters`).
``ctl.unload()`` puts the model's own ``save_pretrained`` back and clears that mark.

Requires transformers; the core package does not import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from triadapt.adapter_files import STATE_FILE, load_state, save_state
from triadapt.controller import Controller
from triadapt.errors import TriAdaptError
from triadapt.integrations.trainer_checkpoints import (find_trainer, hook_trainer, install_adapter_save,
                                                       mark_quantized_adapters, remove_adapter_save)
from triadapt.layer import AdapterLayer
from triadapt.zero3 import make_units_whole
from triadapt.zero_shares import follow_deepspeed

__all__ = ["STATE_FILE", "TriAdaptCallback", "remove_adapter_save"]


class TriAdaptCallback(TrainerCallback):
    """Drives a `Controller` from a `transformers.Trainer` (or any subclass: TRL's ``SFTTrainer``...)."""

    def __init__(self, controller: Controller):
        self.controller = controller
        self.last_orthogonal_loss = 0.0
        self.trainer: Any = None  # the trainer this callback is bound to (found in on_init_end)
        self.resume_checkpoint: str | None = None  # the checkpoint folder the trainer resumed from, once known
        self._input_grads = False  # whether this callback enabled the input embeddings' requires_grad
        # before the Trainer's constructor, which refuses a quantised model without (PEFT) adapters
        mark_quantized_adapters(controller)

    def bind(self, trainer: Any) -> None:
        """Bind to ``trainer`` by hand: only needed for a callback added after the trainer was built
        (``trainer.add_callback``) when resuming an adapter-only checkpoint; done automatically otherwise."""
        self.trainer = trainer
        install_adapter_save(self.controller)
        hook_trainer(trainer, self.controller, self._resuming_from)

    def _resuming_from(self, folder: str) -> None:
        self.resume_checkpoint = folder

    # -- events -----------------------------------------------------------------------------------
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _check_model(self.controller, kwargs.get("model"))  # every check before anything is installed
        _check_deepspeed(self.controller, args)
        trainer = find_trainer(self)
        if trainer is not None:
            _check_fused_lm_head(self.controller, trainer)
        install_adapter_save(self.controller)
        if trainer is not None:
            self.bind(trainer)
        _keep_unit_dtype(self.controller)
        _prepare_zero3(self.controller, args)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.fp16:
            raise TriAdaptError("TrainingArguments.fp16=True is not supported by TriAdaptCallback (the regulariser "
                                "gradient would miss the loss scale): use bf16=True or fp32")
        install_adapter_save(self.controller)
        if self.trainer is None:  # added after the trainer was built: bind now, for the saves to come
            trainer = find_trainer(self)
            if trainer is not None:
                self.bind(trainer)
        if state.global_step > 0 and self.controller.step_count != state.global_step:
            self._restore(args, state)
        self.controller.set_total_steps(state.max_steps)
        _gather_units(self.controller, args)
        follow_deepspeed(self.controller, kwargs.get("optimizer"))  # DeepSpeed steps fp32 copies of the units
        if _checkpointing(args):
            self._enable_input_grads()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._input_grads:
            self.controller.model.disable_input_require_grads()
            self._input_grads = False

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.controller.config.orth_reg_weight == 0:
            return
        # The Trainer puts the model in training mode in its training step, after this event: at the first step of
        # a train() call (a resumed run's too) or after an evaluation it is still in eval mode here.
        self.controller.model.train()
        loss = self.controller.orthogonal_loss()
        loss.backward()
        self.last_orthogonal_loss = float(loss.detach())

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.controller.step(kwargs.get("optimizer"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.controller.step_count != state.global_step:
            raise TriAdaptError(f"controller step {self.controller.step_count} differs from the Trainer's "
                                f"global_step {state.global_step}: was the controller also attached to the optimizer?")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not getattr(args, "should_save", True):
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and not (folder / STATE_FILE).is_file():
            save_state(self.controller.state_dict(), folder / STATE_FILE)

    # -- helpers ----------------------------------------------------------------------------------
    def _restore(self, args: Any, state: Any) -> None:
        """The controller state of a resumed run the trainer hook did not restore (a full-weights checkpoint,
        DeepSpeed): from the folder the trainer resumed from, else ``args.resume_from_checkpoint``, else the
        output directory's checkpoint of this step."""
        candidates = [self.resume_checkpoint, getattr(args, "resume_from_checkpoint", None),
                      Path(args.output_dir) / f"checkpoint-{state.global_step}"]
        for folder in candidates:
            if folder is not None and (Path(folder) / STATE_FILE).is_file():
                file = Path(folder) / STATE_FILE
                break
        else:
            raise TriAdaptError(f"{STATE_FILE}: not found in the checkpoint resumed at step {state.global_step} "
                                f"(looked in {[str(f) for f in candidates if f is not None]}); was the checkpoint "
                                f"saved with TriAdaptCallback?")
        self.controller.load_state_dict(load_state(file))
        if self.controller.step_count != state.global_step:
            raise TriAdaptError(f"{file}: controller state of step {self.controller.step_count}, but the Trainer "
                                f"resumed at step {state.global_step}")

    def _enable_input_grads(self) -> None:
        model = self.controller.model
        if getattr(model, "_require_grads_hooks", None) or hasattr(model, "_require_grads_hook"):
            return  # transformers enabled it already (text models) or an earlier train() did
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
            self._input_grads = True


def _check_model(controller: Controller, model: Any) -> None:
    if model is None or model is controller.model:
        return
    if isinstance(model, torch.nn.Module) and any(m is controller.model for m in model.modules()):
        return
    raise TriAdaptError(f"TriAdaptCallback: the Trainer trains a {type(model).__name__} that is not the controller's "
                        f"model ({type(controller.model).__name__}); pass the model returned by triadapt.inject")


def _checkpointing(args: Any) -> bool:
    return bool(getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", None))


def _check_deepspeed(controller: Controller, args: Any) -> None:
    """The regulariser's own backward (``on_step_begin``) would be a second gradient of the same step for DeepSpeed,
    which reduces each parameter's gradient once (ZeRO 1-3 stop with an assertion): refused up front."""
    if getattr(args, "deepspeed_plugin", None) is not None and controller.config.orth_reg_weight != 0:
        raise TriAdaptError(f"TriAdaptCallback with DeepSpeed needs orth_reg_weight=0 (it is "
                            f"{controller.config.orth_reg_weight}): the callback back-propagates the orthogonal "
                            f"regulariser on its own, and DeepSpeed allows one gradient per parameter and step. "
                            f"The runner (triadapt train --set train.zero_stage=...) adds it to the loss instead")


def _check_fused_lm_head(controller: Controller, trainer: Any) -> None:
    """TRL's trainers compute log-probabilities from ``lm_head.weight`` directly: an adapter there would be ignored."""
    if not any(cls.__module__.split(".")[0] == "trl" for cls in type(trainer).__mro__):
        return
    get_head = getattr(controller.model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, AdapterLayer):
        raise TriAdaptError(f"{type(trainer).__name__} computes log-probabilities from the LM head's weight "
                            f"directly, so an adapter on the LM head would never be trained: remove it from "
                            f"target_modules")


def _keep_unit_dtype(controller: Controller) -> None:
    """Undo TRL's cast of a quantised model's trainable parameters to bf16 on the rank units.

    ``SFTTrainer`` casts every trainable parameter of a 4/8-bit model to bf16 (QLoRA's recipe for PEFT
    adapters). TriAdapt keeps its units in the dtype they were injected in (their reserve buffer's,
    float32 by default) and runs the adapter's forward in the base's compute dtype anyway; in bf16
    storage small AdamW updates of the units would be lost. The units are a tiny part of the memory.
    """
    import triadapt.quantized as quantized

    for layer in controller.layers.values():
        wanted = layer.reserve_full.dtype
        if layer.units.dtype != wanted and quantized.kind(layer.base_layer) is not None:
            layer.units.data = layer.units.data.to(wanted)
            layer._cached_factors = layer._live_units = None


def _zero_stage(args: Any) -> int | None:
    plugin = getattr(args, "deepspeed_plugin", None)
    stage = getattr(plugin, "zero_stage", None)
    return None if stage is None else int(stage)


def _prepare_zero3(controller: Controller, args: Any) -> None:
    """Before ``deepspeed.initialize`` under ZeRO-3: what TRL's SFTTrainer does for PEFT adapters, and what
    the adapters themselves need.

    * Activation checkpointing defaults to reentrant (``use_reentrant=True``) unless the user chose; the
      input embeddings' output then requires grad (``on_train_begin``) so the adapters get gradients.
    * A base built partitioned (``deepspeed.zero.Init``, in 16 bits) is not cast by DeepSpeed, so the
      float32 rank units would stay float32 among 16-bit parameters (the runner's 2-process ZeRO-3
      bf16 run failed so, in DeepSpeed's ``defragment``): the units are cast to the base's 16-bit
      dtype, as DeepSpeed casts a whole model it did not build; its optimizer keeps fp32 copies.
    * The regulariser and the scorer read the units: DeepSpeed's persistence threshold is raised to
      the largest unit parameter so that none is partitioned (`_gather_units` then gathers them once).
    """
    if _zero_stage(args) != 3:
        return
    if _checkpointing(args):
        kwargs = dict(getattr(args, "activation_checkpointing_kwargs", None) or {})
        if kwargs.get("use_reentrant") is None:
            kwargs["use_reentrant"] = True
            args.activation_checkpointing_kwargs = kwargs
            if hasattr(args, "gradient_checkpointing_kwargs"):
                args.gradient_checkpointing_kwargs = kwargs
    config = getattr(getattr(args, "deepspeed_plugin", None), "deepspeed_config", None)
    if isinstance(config, dict) and controller.layers:
        zero = config.setdefault("zero_optimization", {})
        largest = max(layer.units.numel() for layer in controller.layers.values())
        threshold = zero.get("stage3_param_persistence_threshold", "auto")
        if threshold == "auto" or int(threshold) < largest:
            zero["stage3_param_persistence_threshold"] = largest
    base = [p for layer in controller.layers.values() for p in layer.base_layer.parameters()]
    if not any(hasattr(p, "ds_id") for p in base):
        return
    dtypes = {p.dtype for p in base if p.dtype in (torch.bfloat16, torch.float16)}
    if len(dtypes) != 1:
        return  # float32 or quantised base: nothing to match
    dtype = dtypes.pop()
    for layer in controller.layers.values():
        if layer.units.dtype != dtype:
            layer.units.data = layer.units.data.to(dtype)
            layer._cached_factors = layer._live_units = None  # views of the float32 storage


def _gather_units(controller: Controller, args: Any) -> None:
    """After ``deepspeed.initialize`` under ZeRO-3: gather every unit parameter once; being persistent, they
    stay whole (DeepSpeed gathers persistent parameters again after each step)."""
    if _zero_stage(args) != 3 or not controller.layers:
        return
    units = [layer.units for layer in controller.layers.values()]
    if not all(hasattr(p, "ds_id") for p in units):
        return
    make_units_whole(units)
