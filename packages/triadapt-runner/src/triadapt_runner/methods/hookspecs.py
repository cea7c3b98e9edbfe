"""The runner's plugin hook: methods (``approach`` names), beside the core's strategy hooks.

A method plugin implements ``triadapt_methods`` with the core's marker (``from triadapt.plugins import
hookimpl``) in a module exposed through the entry-point group ``triadapt.methods``. The core's strategy
hooks live in the group ``triadapt``; one distribution may expose both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from triadapt_runner.methods.base import Method

PROJECT = "triadapt"  # the core's project: plugins use one hookimpl marker for strategies and methods
ENTRY_POINT_GROUP = "triadapt.methods"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def triadapt_methods() -> list[Method]:
    """Methods this plugin provides: `Method` instances, each under its own ``name`` (the run's ``approach``)."""
