"""What came of one cell of a grid."""

from __future__ import annotations

from dataclasses import dataclass, field

from triadapt_runner.grid.spec import Cell


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # finished | skipped | failed
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
