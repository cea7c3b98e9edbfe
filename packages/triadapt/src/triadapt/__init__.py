"""TriAdapt: TriAdaptLoRA adapters (ΔW = B(L+U)A) whose ranks grow during training.

Paper: Liang, Wang, Zeng, "TriAdaptLoRA: Brain-Inspired Triangular Adaptive Low-Rank
Adaptation for Parameter-Efficient Fine-Tuning", arXiv 2501.08008 (2025).

Names are imported on first use, so ``import triadapt.errors`` (what a command line needs to
report an error) does not import torch. Modules of the package import a name from the module
that defines it, never from here: this module imports them all, so that would be a circle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from triadapt.version import __version__

_EXPORTS = {
    "triadapt.allocator": ["Allocator", "GrowthEvent"],
    "triadapt.config": ["TriAdaptConfig"],
    "triadapt.controller": ["Controller", "inject"],
    "triadapt.errors": ["AdapterLoadError", "ConfigError", "PluginError", "StrategyConfigError", "StrategyOptionError",
                        "TargetError", "TriAdaptError", "UnknownStrategyError"],
    "triadapt.layer": ["AdapterLayer"],
    "triadapt.persistence": ["load"],
    "triadapt.planning": ["InjectionPlan", "plan_injection"],
    "triadapt.plugins": ["Registry", "ScorerSpec", "StructureSpec", "ThresholdSpec", "hookimpl", "registry"],
    "triadapt.schedule": ["PlannedEvent", "Schedule", "plan_schedule"],
    "triadapt.scorers": ["FrobeniusScorer", "Scorer"],
    "triadapt.structures": ["Factors", "LoraStructure", "Structure", "TriangularStructure"],
    "triadapt.thresholds": ["GrowthContext", "Threshold"],
}
_ALIASES = {"load": "load_adapter"}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'triadapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # what static tools see; at run time the names above load on first use
    from triadapt.allocator import Allocator, GrowthEvent
    from triadapt.config import TriAdaptConfig
    from triadapt.controller import Controller, inject
    from triadapt.errors import (AdapterLoadError, ConfigError, PluginError, StrategyConfigError, StrategyOptionError,
                                 TargetError, TriAdaptError, UnknownStrategyError)
    from triadapt.layer import AdapterLayer
    from triadapt.persistence import load_adapter as load
    from triadapt.planning import InjectionPlan, plan_injection
    from triadapt.plugins import Registry, ScorerSpec, StructureSpec, ThresholdSpec, hookimpl, registry
    from triadapt.schedule import PlannedEvent, Schedule, plan_schedule
    from triadapt.scorers import FrobeniusScorer, Scorer
    from triadapt.structures import Factors, LoraStructure, Structure, TriangularStructure
    from triadapt.thresholds import GrowthContext, Threshold
