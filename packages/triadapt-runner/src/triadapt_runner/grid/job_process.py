"""One process of a cell's multi-process job (`triadapt_runner.grid.cell_job`), as torchrun starts it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from triadapt_runner.grid.spec import Cell


def main(argv: list[str]) -> int:
    """One process of the job: join the group, train the cell (the first process tracks it), leave."""
    from triadapt_runner.config import RunConfig
    from triadapt_runner.console import quiet_libraries
    from triadapt_runner.distributed.launch import is_main_process
    from triadapt_runner.distributed.processes import init_processes, leave_processes
    from triadapt_runner.grid.cells import run_cell
    from triadapt_runner.tracking.runs import Tracker

    spec = json.loads(Path(argv[0]).read_text())
    quiet_libraries()
    init_processes()
    tracker = Tracker(spec["uri"], spec["experiment"]) if is_main_process() else None
    data = spec["cell"]
    cell = Cell(data["id"], RunConfig.from_dict(data["config"]), data["axes"], data["seed"], data["row"])
    outcome = run_cell(tracker, cell, spec["parent_id"], spec["grid"], progress=False,
                       checkpoint_root=spec["checkpoint_root"], extra_tags=spec["extra_tags"])
    if outcome.status == "failed":
        print(f"cell failed: {outcome.error}", file=sys.stderr, flush=True)
        return 1
    leave_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
