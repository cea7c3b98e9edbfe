"""Named records that strategy hooks return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from triadapt.config import TriAdaptConfig
    from triadapt.scorers import Scorer
    from triadapt.structures import Structure
    from triadapt.thresholds import Threshold


@dataclass(frozen=True)
class StructureSpec:
    name: str
    factory: Callable[[TriAdaptConfig], Structure]
    description: str = ""


@dataclass(frozen=True)
class ScorerSpec:
    name: str
    factory: Callable[[TriAdaptConfig], Scorer]
    description: str = ""


@dataclass(frozen=True)
class ThresholdSpec:
    name: str
    factory: Callable[[TriAdaptConfig], Threshold]
    description: str = ""


def strategy_options(config: "TriAdaptConfig", name: str, allowed: set[str]) -> dict:
    """``config.strategy_options[name]`` checked against the option names a strategy accepts."""
    options = dict(config.strategy_options.get(name, {}) or {})
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"strategy_options.{name}.{unknown[0]}={options[unknown[0]]!r} is invalid: the options of "
                         f"{name!r} are {', '.join(sorted(allowed)) or 'none'}")
    return options
