"""Plugin system: hook specifications, named strategy specs and the registry."""

from triadapt.plugins.hookspecs import hookimpl, hookspec
from triadapt.plugins.registry import ENTRY_POINT_GROUP, PluginInfo, Registry, registry, use_registry
from triadapt.plugins.specs import (NoOptions, ScorerSpec, StrategySpec, StructureSpec, ThresholdSpec,
                                    strategy_options)

__all__ = [
    "ENTRY_POINT_GROUP", "NoOptions", "PluginInfo", "Registry", "ScorerSpec", "StrategySpec", "StructureSpec",
    "ThresholdSpec", "hookimpl", "hookspec", "registry", "strategy_options", "use_registry",
]
