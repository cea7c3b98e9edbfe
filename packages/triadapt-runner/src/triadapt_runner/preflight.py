"""Check runs and grid cells before anything starts: data, model, adapters and growth schedule.

For every cell the data is loaded and checked (once per distinct data config), the model is
built on the ``meta`` device (its structure without weights, once per model and task), T is
derived the way the training loop derives it, and `triadapt.plan_injection` checks what
`inject`, the allocator and the schedule would check. Nothing trains, nothing is logged to
MLflow, so a bad cell fails before any run exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from triadapt.errors import TriAdaptError
from triadapt_runner import quantization
from triadapt_runner.distributed.launch import check_launch_environment, world_size
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.spec import Cell
from triadapt_runner.models import model_path


@dataclass
class CellCheck:
    cell: Cell
    total_steps: int | None = None
    plan: Any = None  # the method's MethodPlan
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """One line: the schedule of a valid cell, or its error."""
        if self.error:
            return f"INVALID: {self.error}"
        text = f"T={self.total_steps}, {self.plan.num_matrices} matrices, {self.plan.summary}"
        return text + (f"; {self.plan.warning}" if self.plan.warning else "")


def optimizer_steps(items: int, train: Any, world: int) -> int:
    """T: batches per process (accelerate shards the batches evenly), over accumulation, times epochs."""
    batches = math.ceil(items / train.batch_size)
    per_process = math.ceil(batches / world)
    return math.ceil(per_process / train.gradient_accumulation_steps) * train.epochs


class Preflight:
    """Checks cells, sharing the loaded data, meta models and tokenizers between them."""

    def __init__(self, world: int | None = None, devices_here: bool = True):
        self.world = world or world_size()
        self.devices_here = devices_here  # False: the cells run elsewhere (a Ray cluster), which checks them
        self._rows: dict[str, Any] = {}
        self._models: dict[tuple[str, str, str], Any] = {}
        self._tokenizers: dict[str, Any] = {}

    def check(self, cell: Cell) -> CellCheck:
        try:
            return self._check(cell)
        except TriAdaptError as exc:
            return CellCheck(cell, error=str(exc).splitlines()[0])

    def _check(self, cell: Cell) -> CellCheck:
        from triadapt_runner.tasks.registry import kind_for
        from triadapt_runner.distributed.setup import setup_for
        from triadapt_runner.methods.registry import method_for

        cfg = cell.config
        method = method_for(cfg)
        method.strategy_tags(cfg)  # what the cell's run is tagged with, from the config alone: fails here, not at
        method.allocates_ranks(cfg)  # the cell's start, where it would end the whole grid
        world = self._world(cfg)
        setup_for(cfg.train, world).check(cfg, method)
        task, rows = self._data(cfg.data)
        kind = kind_for(task)
        quantization.check(cfg, kind)
        items = kind.count_train_items(cfg, task, rows, lambda: self._tokenizer(cfg.model))
        total = optimizer_steps(items, cfg.train, world)
        model = self._model(cfg.model, kind, task)
        kind.check(cfg, task, model)
        return CellCheck(cell, total, method.plan(model, cfg, total))

    def _world(self, cfg: Any) -> int:
        """The run's world size: the launcher's, or the job the runner starts for ``train.num_processes``."""
        processes = cfg.train.num_processes
        if processes > 1 and self.world > 1:
            raise RunnerError(f"train.num_processes={processes} is invalid under a multi-process launch (world size "
                              f"{self.world}): the runner starts such a cell's processes itself; run a plain "
                              f"`triadapt` command")
        if processes > 1 and self.devices_here:
            from triadapt_runner.grid.placement import Devices

            Devices.of_this_machine().check(processes)
        return self.world if self.world > 1 else processes

    def _data(self, data: Any) -> Any:
        from triadapt_runner.tasks.data.loading import load_rows

        key = json.dumps(dataclasses.asdict(data), sort_keys=True)
        if key not in self._rows:
            try:
                self._rows[key] = load_rows(data)
            except RunnerError as exc:
                self._rows[key] = exc
        found = self._rows[key]
        if isinstance(found, RunnerError):
            raise found
        return found

    def _model(self, name: str, kind: Any, task: Any) -> Any:
        key = (name, kind.name, json.dumps(kind.model_kwargs(task), sort_keys=True))
        if key not in self._models:
            from triadapt_runner.structures_cache import meta_model

            try:
                self._models[key] = meta_model(kind, model_path(name), task)
            except Exception as exc:  # transformers raises OSError, ValueError, … for a model it cannot find
                self._models[key] = RunnerError(
                    f"model={name!r} is invalid: not a local model folder nor a reachable hub model "
                    f"({type(exc).__name__}); the built-in offline model is 'minilm'")
        found = self._models[key]
        if isinstance(found, RunnerError):
            raise found
        return found

    def _tokenizer(self, name: str) -> Any:
        if name not in self._tokenizers:
            from transformers import AutoTokenizer

            self._tokenizers[name] = AutoTokenizer.from_pretrained(model_path(name))
        return self._tokenizers[name]


def check_cells(cells: list[Cell], devices_here: bool = True) -> list[CellCheck]:
    """Every cell checked; unsupported launch settings (FSDP, fp16) fail at once.

    ``devices_here``: whether a cell's processes must fit this machine (False for cells a Ray cluster runs).
    """
    check_launch_environment()
    preflight = Preflight(devices_here=devices_here)
    return [preflight.check(cell) for cell in cells]


def preflight(cells: list[Cell], source: str | None = None, devices_here: bool = True) -> list[CellCheck]:
    """Check every cell; raise one line naming the first invalid cell (and how many are invalid)."""
    checks = check_cells(cells, devices_here)
    bad = [c for c in checks if not c.ok]
    if not bad:
        return checks
    if source is None and len(checks) == 1:
        raise RunnerError(bad[0].error)
    first = bad[0]
    raise RunnerError(f"{source or 'grid'}: {len(bad)} of {len(checks)} cells are invalid (see --dry-run); first: "
                      f"cell {first.cell.id} ({first.cell.method}, seed {first.cell.seed}): {first.error}")


def dry_run_lines(spec: Any, devices_here: bool = True) -> tuple[list[str], int]:
    """A grid's cells, each checked as before a real run, with its schedule or its error; and how many are invalid."""
    checks = check_cells(spec.cells(), devices_here)
    invalid = sum(1 for c in checks if not c.ok)
    lines = [f"grid {spec.name!r}: {len(checks)} cells (spec {spec.spec_hash}, experiment {spec.experiment})"
             + (f"; {invalid} invalid" if invalid else "")]
    if spec.select:
        s = spec.select
        rest = [seed for seed in spec.seeds if seed not in s.seeds]
        rows = len(spec.selection_cells()) // (len(s.values) * len(s.seeds))
        lines.append(f"selection: {s.axis} over {list(s.values)} on seeds {list(s.seeds)} by validation {s.metric}; "
                     f"then seeds {rest} at each row's chosen value, row by row: {len(spec.selection_cells())} "
                     f"selection cells and {rows * len(rest)} further cells for {rows} rows "
                     f"(every value's cell is listed and checked below)")
    for check in checks:
        axes = ", ".join(f"{k}={v}" for k, v in check.cell.axes.items())
        lines.append(f"  {check.cell.id}  {axes}")
        lines.append(f"      {check.describe()}")
    return lines, invalid
