"""`GrowthEvent`: the record of one growth event.

A module of its own, below the allocator that makes the records, so that the plugin hook that
observes them (`triadapt.plugins.hookspecs`) can name the type without depending on the allocator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GrowthEvent:
    """Record of one growth event."""

    step: int
    k: int  # matrices the threshold asked for, after the cap by growable matrices
    grown: dict[str, int]  # module name -> rank added
    budget_before: int
    budget_left: int
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
