"""`inject` puts adapters into a model; the returned `Controller` drives them.

A plain PyTorch loop::

    ctl = triadapt.inject(model, TriAdaptConfig(total_steps=T, warmup_steps=100, growth_interval=100))
    optimizer = torch.optim.AdamW(ctl.trainable_parameters(), lr=1e-3)
    ctl.attach(optimizer)            # growth after every optimizer.step(), never per micro-batch
    for batch in loader:
        loss = model(**batch).loss + ctl.orthogonal_loss()
        loss.backward(); optimizer.step(); optimizer.zero_grad()

Without ``attach``, call ``ctl.step(optimizer)`` once after each optimizer step instead, before
the LR scheduler steps (the young units' bias correction redoes the step at its learning rate).
Either way the controller also gives every grown unit a fresh start in the optimizer
(`triadapt.fresh_units`); ``ctl.step()`` without the optimizer skips that. Under DeepSpeed, call
``triadapt.zero_shares.follow_deepspeed(ctl, engine.optimizer)`` once after ``deepspeed.initialize``
so that the same happens in DeepSpeed's fp32 copies.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

import triadapt.quantized as quantized
from triadapt.allocator import Allocator, GrowthEvent
from triadapt.config import TriAdaptConfig
from triadapt.errors import TriAdaptError
from triadapt.fresh_units import FlatShare, UnitRefresher
from triadapt.layer import AdapterLayer
from triadapt.planning import InjectionPlan, plan_injection
from triadapt.plugins.registry import Registry, registry as current_registry
from triadapt.regularization import orthogonal_penalty
from triadapt.schedule import Schedule
from triadapt.step_assembly import StepAssembly
from triadapt.targets import model_type


def inject(model: nn.Module, config: TriAdaptConfig | None = None, *, registry: Registry | None = None) -> "Controller":
    """Freeze ``model``, wrap its target layers with adapters in place and return their controller.

    Atomic: everything is checked first (`plan_injection`), and should building the adapters
    still fail, the model gets its layers and ``requires_grad`` flags back before the error
    propagates.
    """
    config = config or TriAdaptConfig()
    reg = registry or current_registry()
    plan = plan_injection(model, config, registry=reg)
    flags = [(param, param.requires_grad) for param in model.parameters()]
    layers: dict[str, AdapterLayer] = {}
    try:
        generator = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        for param in model.parameters():
            param.requires_grad_(False)
        for name in plan.targets:
            base = model.get_submodule(name)
            layer = AdapterLayer(base, plan.structure, init_rank=config.init_rank, capacity=config.capacity,
                                 lora_alpha=config.lora_alpha, dropout=config.dropout, init_std=config.init_std,
                                 eps=config.eps, generator=generator)
            layer.to(device=base.weight.device)
            _replace(model, name, layer)
            layers[name] = layer
        for head in plan.heads:
            for param in model.get_submodule(head).parameters():
                param.requires_grad_(True)
        return Controller(model, config, layers, plan.heads, reg, plan=plan)
    except BaseException:
        restore_model(model, layers, flags)
        raise


def restore_model(model: nn.Module, layers: Mapping[str, AdapterLayer], flags: list[tuple[nn.Parameter, bool]]) -> None:
    """Undo an injection: the base layers back in place, every ``requires_grad`` flag as it was."""
    for name, layer in layers.items():
        _replace(model, name, layer.base_layer)
    for param, flag in flags:
        param.requires_grad_(flag)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class Controller:
    """Owns the adapters of one model: growth, regulariser, counts, merge, save and export."""

    def __init__(self, model: nn.Module, config: TriAdaptConfig, layers: Mapping[str, AdapterLayer],
                 heads: list[str], registry: Registry, plan: InjectionPlan | None = None):
        self.model, self.config, self.layers, self.heads = model, config, dict(layers), list(heads)
        self.registry = registry
        scorer = plan.scorer if plan else registry.create("scorer", config.scorer, config)
        threshold = plan.threshold if plan else registry.create("threshold", config.threshold, config)
        self.allocator = Allocator(self.layers, config, scorer, threshold)
        scorer.initialize(self.layers)
        self.refresher = UnitRefresher(self.layers)
        self._hook: Any = None
        self._unload_hooks: list[Callable[["Controller"], None]] = []
        self.assembly = StepAssembly(self.layers.values())
        self.assembly.install(model)

    # -- growth -----------------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self.allocator.step_count

    @property
    def events(self) -> list[GrowthEvent]:
        return self.allocator.events

    @property
    def ranks(self) -> dict[str, int]:
        return {name: layer.rank for name, layer in self.layers.items()}

    def set_total_steps(self, total_steps: int) -> None:
        """Set T (trainers call this once they know it) and validate the schedule."""
        self.config = self.config.replace(total_steps=int(total_steps))
        self.allocator.config = self.config
        self.allocator.validate_schedule()

    def validate_schedule(self) -> Schedule:
        """Raise if the growth schedule cannot work; return the planned events (`triadapt.schedule`)."""
        return self.allocator.validate_schedule()

    def step(self, optimizer: Any = None) -> GrowthEvent | None:
        """Call once after every optimizer step (not per micro-batch), before the LR scheduler steps. Returns the
        growth event, if any.

        Pass the optimizer (or its accelerate wrapper) so that reserved and young units stay as
        fresh as new parameters would be (`triadapt.fresh_units`).
        """
        if self._hook is not None:
            raise TriAdaptError("this controller is attached to an optimizer, which already calls step(); "
                                "do not call step() by hand as well")
        return self._step(optimizer)

    def _step(self, optimizer: Any = None) -> GrowthEvent | None:
        if optimizer is not None:
            self.refresher(optimizer, self.allocator.step_count + 1)
        if self.allocator.step_count == 0:
            self.allocator.validate_schedule()
        event = self.allocator.step()
        if event is not None:
            self.refresher.reset_joining(optimizer, event.grown)  # joining units: initial values, no history
            context = {"step": event.step, "total_rank": self.allocator.total_rank(),
                       "budget": self.allocator.initial_budget}
            self.registry.notify_growth(event, self.ranks, context)
        return event

    def follow_flat_optimizer(self, optimizer: torch.optim.Optimizer,
                              shares: Callable[[], Iterable[FlatShare]]) -> None:
        """Keep grown units fresh in an engine whose optimizer steps flat copies of the parameters (DeepSpeed ZeRO).

        ``optimizer`` is the torch optimizer the engine steps, ``shares()`` this process's part of each unit
        parameter in it (`triadapt.fresh_units.FlatShare`; for DeepSpeed, `triadapt.zero_shares.follow_deepspeed`
        makes this call). Call once after the engine is built, then
        ``step(engine_optimizer)`` as usual: the young units' own bias correction runs inside the engine's step
        (before it copies the values into the model), and joining units get their initial values and zero
        state in the engine's copies too.
        """
        self.refresher.follow_flat(optimizer, shares, lambda: self.allocator.step_count + 1)

    def observe_gradients(self) -> None:
        """Optional: call between ``backward`` and ``optimizer.step()`` on every process.

        Scorers that read gradients (``observes_steps``) then see them before the step; engines
        that free gradients inside their step (DeepSpeed) need this. Without the call, ``step()``
        lets them observe after the optimizer step, while ``param.grad`` still holds the gradients.
        """
        self.allocator.observe()

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run ``step()`` automatically after each ``optimizer.step()``."""
        if self._hook is not None:
            raise TriAdaptError("this controller is already attached to an optimizer")
        self._hook = optimizer.register_step_post_hook(lambda opt, *_: self._step(opt))

    def detach(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    # -- training helpers -------------------------------------------------------------------------
    def orthogonal_loss(self) -> Tensor:
        """λ · mean ‖P − I‖_F over the 2M factors (Eq. 10); zero outside training mode or with λ = 0."""
        if not self.model.training or self.config.orth_reg_weight == 0:
            return torch.zeros((), device=self._device())
        penalty = orthogonal_penalty(self.layers.values(), squared=self.config.orth_reg_squared,
                                     stacked=self.assembly.stacked_blocks)
        return self.config.orth_reg_weight * penalty

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, int]:
        """trainable (all reserved adapter units + heads), reserved, active adapter and head counts.

        Counts are of the units' own entries: the zero padding of the unit rows
        (`triadapt.unit_storage`) is storage, not parameters, and is left out.
        """
        reserved = sum(layer.unit_numel(layer.capacity) for layer in self.layers.values())
        active = sum(layer.unit_numel() for layer in self.layers.values())
        head = sum(p.numel() for h in self.heads for p in self.model.get_submodule(h).parameters())
        padding = sum(layer.units.numel() for layer in self.layers.values()) - reserved
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad) - padding
        total = sum(quantized.logical_numel(p) for p in self.model.parameters()) - padding  # packed: as unpacked
        return {"trainable": trainable, "reserved_adapter": reserved, "active_adapter": active,
                "heads": head, "total": total}

    def _device(self) -> torch.device:
        return next(iter(self.layers.values())).base_layer.weight.device

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Allocator state (step, ranks, scorer state, events) for exact resume."""
        return {"allocator": self.allocator.state_dict(), "total_steps": self.config.total_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("total_steps") is not None:
            self.config = self.config.replace(total_steps=state["total_steps"])
            self.allocator.config = self.config
        self.allocator.load_state_dict(state["allocator"])

    # -- merge / unload / persistence -------------------------------------------------------------
    def merge(self) -> None:
        """Merge every adapter into its base weight (quantised bases: `triadapt.quantized`).

        Atomic: every layer is checked first, and should a merge still fail, the layers merged so far
        get their weights back before the error propagates.
        """
        pending = [layer for layer in self.layers.values() if not layer.merged]
        for layer in pending:
            quantized.check_mergeable(layer.base_layer)
        done: list[tuple[AdapterLayer, Any]] = []
        try:
            for layer in pending:
                saved = quantized.snapshot(layer.base_layer) if quantized.kind(layer.base_layer) else None
                layer.merge()
                done.append((layer, saved))
        except BaseException:
            for layer, saved in reversed(done):
                if saved is None:
                    layer.unmerge()
                else:
                    quantized.restore(layer.base_layer, saved)
                    layer.merged = False
            raise

    def unmerge(self) -> None:
        for layer in self.layers.values():
            layer.unmerge()

    def unload(self, merge: bool = True) -> nn.Module:
        """Put the plain base layers back (with ΔW merged in unless ``merge=False``); returns the model."""
        if merge:
            self.merge()
        else:
            self.unmerge()
        for name, layer in self.layers.items():
            _replace(self.model, name, layer.base_layer)
        self.detach()
        self.assembly.uninstall()
        self.layers = {}
        hooks, self._unload_hooks = self._unload_hooks, []
        for hook in hooks:
            hook(self)
        return self.model

    def on_unload(self, hook: Callable[["Controller"], None]) -> None:
        """Call ``hook(controller)`` once ``unload()`` has put the base layers back (integrations undo what they
        installed on the model; each hook runs once)."""
        if hook not in self._unload_hooks:
            self._unload_hooks.append(hook)

    def save(self, path: str) -> None:
        from triadapt.adapter_files import save_adapter

        save_adapter(self, path)

    def export_peft(self, path: str, base_model_name_or_path: str | None = None, *,
                    pad_to_max_rank: bool = False) -> None:
        """A peft LoRA copy: per-module ranks (``rank_pattern``), or all zero-padded to the largest rank."""
        from triadapt.peft_export import export_peft

        export_peft(self, path, base_model_name_or_path=base_model_name_or_path, pad_to_max_rank=pad_to_max_rank)

    @property
    def model_type(self) -> str | None:
        return model_type(self.model)
