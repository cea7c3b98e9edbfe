"""Everything `inject` checks, without touching the model: `plan_injection`.

The plan names the target layers with their shapes, the heads trained in full, the strategy
instances, the budget and (with ``total_steps`` set) the growth schedule. Building it reads
only module types, names and shapes, so it also works on a model built on the ``meta``
device (no weights in memory): the runner checks every run and grid cell that way before
anything starts. `inject` builds the same plan first and changes the model only once the
plan holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

import triadapt.quantized as quantized
from triadapt.config import TriAdaptConfig
from triadapt.errors import TargetError, TriAdaptError
from triadapt.layer import AdapterLayer, base_shape
from triadapt.schedule import Schedule, plan_schedule
from triadapt.targets import find_heads, find_targets, model_type


@dataclass
class InjectionPlan:
    """What `inject` will do to a model, checked in full."""

    config: TriAdaptConfig
    targets: dict[str, tuple[int, int]]  # layer name -> (in_features, out_features), in module order
    heads: list[str]  # modules trained in full
    structure: Any
    scorer: Any
    threshold: Any
    schedule: Schedule
    model_type: str | None = None

    @property
    def num_matrices(self) -> int:
        return len(self.targets)

    @property
    def budget(self) -> int:
        return self.config.budget(self.num_matrices)

    def unit_shapes(self, name: str, rank: int) -> dict[str, tuple[int, ...]]:
        """``units.<i>.<key>`` -> shape of the first ``rank`` rank units of target ``name``."""
        n_in, n_out = self.targets[name]
        return {f"{index}.{key}": shape for index in range(rank)
                for key, shape in self.structure.unit_shapes(index, n_in, n_out).items()}


def plan_injection(model: nn.Module, config: TriAdaptConfig | None = None, *, registry: Any = None) -> InjectionPlan:
    """Check that ``config`` can be injected into ``model`` and return the plan; the model is not changed.

    Raises what `inject` would raise (`ConfigError`, `TargetError`, `UnknownStrategyError`,
    `TriAdaptError`), naming the field and the value.
    """
    from triadapt.plugins.registry import registry as current_registry

    config = config or TriAdaptConfig()
    reg = registry or current_registry()
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise TriAdaptError("this model already holds TriAdapt adapters: call unload() before injecting again")
    heads = find_heads(model, config.trainable_modules)
    _check_heads_trainable(model, heads)
    names = find_targets(model, config.target_modules, exclude=heads)
    targets = {name: base_shape(model.get_submodule(name)) for name in names}
    structure = reg.create("structure", config.structure, config)
    scorer = reg.create("scorer", config.scorer, config)
    threshold = reg.create("threshold", config.threshold, config)
    schedule = plan_schedule(config, len(targets), threshold, require_total_steps=False)  # T may come later
    return InjectionPlan(config, targets, heads, structure, scorer, threshold, schedule, model_type(model))


def _check_heads_trainable(model: nn.Module, heads: list[str]) -> None:
    """A head trained in full must hold float weights: a 4/8-bit head cannot take gradients."""
    for head in heads:
        for module in model.get_submodule(head).modules():
            if quantized.kind(module) is not None:
                skip = head.split(".")[-1]
                raise TargetError(f"trainable_modules: {head!r} is quantised ({quantized.describe(module)}) and "
                                  f"cannot be trained; load the model with the head left out of the quantisation "
                                  f"(transformers: BitsAndBytesConfig(llm_int8_skip_modules=[{skip!r}, ...]))")
