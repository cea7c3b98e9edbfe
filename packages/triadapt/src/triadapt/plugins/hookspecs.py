"""Every hook a triadapt plugin may implement (prefix ``triadapt_``).

Strategy hooks return lists of named specs; strategies are then chosen by name from the
config, never by hook order. A plugin is any module or object with ``@hookimpl``
functions, exposed through the entry-point group ``triadapt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from triadapt.events import GrowthEvent
    from triadapt.plugins.specs import ScorerSpec, StructureSpec, ThresholdSpec

PROJECT = "triadapt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def triadapt_structures() -> list[StructureSpec]:
    """Structures this plugin provides (how ΔW is parametrised and grown)."""


@hookspec
def triadapt_scorers() -> list[ScorerSpec]:
    """Importance scorers this plugin provides."""


@hookspec
def triadapt_thresholds() -> list[ThresholdSpec]:
    """Thresholds (how many matrices grow per event) this plugin provides."""


@hookspec
def triadapt_growth_event(event: GrowthEvent, ranks: dict[str, int], context: dict[str, Any]) -> None:
    """Observe a growth event after it happened (logging, plots). ``ranks`` are the new ranks;
    ``context`` carries the controller's ``total_rank``, ``budget`` and ``step``."""
