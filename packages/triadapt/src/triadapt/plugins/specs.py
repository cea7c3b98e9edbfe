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
