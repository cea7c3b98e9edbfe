"""What docs/results.md reads from a grid's MLflow store: its comparison tables (`triadapt compare`'s), each run's
value per seed, the machine it trained on, and the learning-rate selection of every row.

The store is one of the archives committed next to this file (`store_archive.py`), unpacked into a temporary folder.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from store_archive import unpack
from triadapt_runner.tracking.compare import Table, build_table, collect_runs, parent_of
from triadapt_runner.tracking.runs import Tracker, experiments_with_grid
from triadapt_runner.tracking.significance import Difference, difference

HERE = Path(__file__).resolve().parent
MINUS = "\u2212"


@contextmanager
def opened(archive: str) -> Iterator[str]:
    """The tracking URI of ``archive`` (a name next to this file, without ``.tar.xz``), unpacked for the block."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / archive
        unpack(HERE / f"{archive}.tar.xz", folder)
        yield f"sqlite:///{folder / 'mlflow.db'}"


def machine(run: Any) -> str:
    """G for a run on a CUDA GPU, C for one on the CPU (tag ``triadapt.device``)."""
    return "G" if run.data.tags.get("triadapt.device", "").startswith("cuda") else "C"


class GridRuns:
    """The finished runs of the latest grid named ``grid`` in the store at ``uri``; ``metric`` is the one that
    ``values``, ``mean`` and ``diff`` read unless told another."""

    def __init__(self, uri: str, grid: str, metric: str = "result_accuracy"):
        self.metric = metric
        (experiment,) = experiments_with_grid(uri, grid)
        self.tracker = Tracker(uri, experiment, create=False)
        self.parent = parent_of(self.tracker, grid)
        self.children = self.tracker.children(self.parent)
        self.notes: list[str] = []
        self.runs = collect_runs(self.tracker, parent_id=self.parent, notes=self.notes)
        if any(note.startswith("left out") for note in self.notes):
            raise SystemExit(f"grid {grid} is not complete: {self.notes}")
        self._selection: dict[str, Any] | None = None

    def table(self, metric: str = "main", baselines: tuple[str, ...] = ()) -> Table:
        return build_table(self.runs, metric, baselines)

    def methods(self) -> list[str]:
        return self.table().methods

    def run(self, method: str, seed: int) -> Any:
        (run,) = [r for r in self.runs if r.data.tags["triadapt.method"] == method
                  and int(r.data.tags["triadapt.seed"]) == seed]
        return run

    def seeds(self, method: str) -> list[int]:
        return sorted(int(r.data.tags["triadapt.seed"]) for r in self.runs if r.data.tags["triadapt.method"] == method)

    def values(self, method: str, metric: str | None = None) -> dict[int, float]:
        """The metric of each seed's run (a run without it is left out: full fine-tuning has no ranks)."""
        out = {s: self.run(method, s).data.metrics.get(metric or self.metric) for s in self.seeds(method)}
        return {s: v for s, v in out.items() if v is not None}

    def mean(self, method: str, metric: str | None = None) -> float | None:
        values = list(self.values(method, metric).values())
        return statistics.fmean(values) if values else None

    def diff(self, method: str, baseline: str, other: "GridRuns | None" = None) -> Difference:
        """``method`` against ``baseline`` (of ``other``, default this grid), paired on seeds, on ``self.metric``."""
        return difference(self.values(method), (other or self).values(baseline))

    def selection(self) -> dict[str, dict[str, Any]]:
        """Each row's selection (``selection.json``): method -> {"scores": {value: score}, "chosen": value}."""
        if self._selection is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.tracker.client.download_artifacts(self.parent, "selection.json", tmp)
                report = json.loads(Path(path).read_text())
            self._selection = {json.loads(row)["method"]: entry for row, entry in report["rows"].items()}
            self._select = report["select"]
        return self._selection

    def select_values(self) -> list[float]:
        """The values the grid's ``select`` chose from, as its spec lists them (``selection.json``)."""
        self.selection()
        return [float(v) for v in self._select["values"]]

    def selection_machines(self, method: str) -> dict[str, str]:
        """The machine of each selection run of ``method`` (keyed like ``selection()``'s scores)."""
        out = {}
        for run in self.children:
            tags = run.data.tags
            if tags.get("triadapt.method") == method and "triadapt.selection" in tags and tags["triadapt.seed"] == "0":
                out[repr(float(run.data.params["train.learning_rate"]))] = machine(run)
        return out


def progress(uri: str | None, grid: str) -> tuple[int, int]:
    """How many of the cells of ``benchmarks/ablations/<grid>.yaml`` have finished in the store at ``uri`` (none
    without a store), and how many the grid plans (its selection cells, then the other seeds of each row)."""
    from triadapt_runner.grid.spec import load_grid

    spec = load_grid(HERE.parent / "ablations" / f"{grid}.yaml")
    planned = len(spec.cells())
    if spec.select:
        rows = {c.row for c in spec.cells()}
        planned = len(spec.selection_cells()) + len(rows) * (len(spec.seeds) - len(spec.select.seeds))
    experiments = experiments_with_grid(uri, grid) if uri else []
    done = 0
    if experiments:
        (experiment,) = experiments
        tracker = Tracker(uri, experiment, create=False)
        done = sum(r.info.status == "FINISHED" for r in tracker.children(parent_of(tracker, grid)))
    return done, planned


def markdown(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def pct(value: float, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}".replace("-", MINUS)


def signed(value: float, digits: int = 2) -> str:
    return f"{value * 100:+.{digits}f}".replace("-", MINUS)


def p_text(p: float | None) -> str:
    """Two significant digits, trailing zeros kept: 0.023, 0.80, 1.0."""
    if p is None:
        return "n/a"
    decimals = max(1, 1 - math.floor(math.log10(p))) if p > 0 else 4
    text = f"{p:.{decimals}f}"
    return "1.0" if float(text) >= 1 else text


def ci_text(d: Difference) -> str:
    """``+2.64 [+0.90, +4.37], 0.023`` (per cent points; the p-value of the paired test)."""
    return f"{signed(d.diff)} [{signed(d.ci_low)}, {signed(d.ci_high)}], {p_text(d.p_value)}"


def mean_std(values: list[float]) -> str:
    return f"{pct(statistics.fmean(values), 2)} ± {pct(statistics.stdev(values), 2)}"


def lr_text(value: float) -> str:
    """5e-4, 2.5e-3 (as the grids write them)."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
