"""Ablation grids from YAML: product and zip axes, seeds as an axis, deterministic cell ids.

    name: tables-1                    # identifies the grid (its MLflow parent run)
    experiment: triadapt              # MLflow experiment (optional)
    base:                             # a RunConfig shared by every cell
      task: rotten_tomatoes
      train: {epochs: 1}
    axes:                             # combined as a product, group by group
      - product:                      # every combination of these keys
          task: [rotten_tomatoes, drug_reviews]
      - zip:                          # these lists move together (equal lengths)
          method: [lora, triadapt]
          adapter.structure: [lora, triangular]
    seeds: [0, 1, 2]

A cell's id is a hash of its seed and of the config fields that differ from their defaults
(`RunConfig.config_hash`), so an interrupted grid resumes, also after an upgrade that adds a field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triadapt_runner.config import RunConfig, apply_overrides, valid_keys
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.selection import Selection, check_metric, parse_selection
from triadapt_runner.yamlfile import read_yaml

TOP_LEVEL = ("name", "experiment", "base", "axes", "seeds", "select", "description")


@dataclass
class Cell:
    id: str
    config: RunConfig
    axes: dict[str, Any]  # the axis values of this cell (seed included)
    seed: int
    row: str = ""  # the axis values without the seed and the selection axis (a row of the table)

    @property
    def method(self) -> str:
        return self.config.label

    @property
    def task(self) -> str:
        return self.config.data.task


@dataclass
class GridSpec:
    name: str
    base: dict[str, Any]
    axes: list[tuple[str, dict[str, list[Any]]]]
    seeds: list[int]
    experiment: str = "triadapt"
    source: str = "<inline>"
    select: Selection | None = None

    @property
    def spec_hash(self) -> str:
        data = {"base": self.base, "axes": self.axes, "seeds": self.seeds}
        if self.select:
            data["select"] = self.select.to_dict()
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def selection_cells(self) -> list[Cell]:
        """With ``select``: the cells that choose (every value, the selection seeds); else every cell."""
        cells = self.cells()
        return [c for c in cells if c.seed in self.select.seeds] if self.select else cells

    def final_cells(self, chosen: dict[str, Any]) -> list[Cell]:
        """With ``select``: the other seeds of every row at its chosen value (rows without a choice: none)."""
        if not self.select:
            return []
        axis = self.select.axis
        return [c for c in self.cells() if c.seed not in self.select.seeds and c.row in chosen
                and c.axes[axis] == chosen[c.row]]

    def cells(self) -> list[Cell]:
        """Every cell the grid may run (with ``select``: every value of the selection axis for every seed)."""
        groups = [_group_rows(kind, keys) for kind, keys in self.axes]
        if self.select:
            groups.append([{self.select.axis: value} for value in self.select.values])
        out, seen = [], set()
        for combo in itertools.product(*groups) if groups else [()]:
            values: dict[str, Any] = {}
            for part in combo:
                values.update(part)
            row = json.dumps({k: v for k, v in values.items() if not self.select or k != self.select.axis},
                             sort_keys=True, default=str)
            for seed in self.seeds:
                overrides = {**values, "train.seed": seed}
                config = _resolve(self.source, self.base, overrides)
                cell_id = config.config_hash(with_seed=True)
                if cell_id in seen:
                    raise RunnerError(f"{self.source}: two cells resolve to the same config {values} seed {seed}; "
                                      f"remove the duplicate axis values")
                seen.add(cell_id)
                out.append(Cell(cell_id, config, {**values, "seed": seed}, seed, row))
        return out


def load_grid(path: str | Path) -> GridSpec:
    return parse_grid(read_yaml(Path(path), "grid"), source=str(path))


def parse_grid(data: Any, source: str = "<inline>") -> GridSpec:
    if not isinstance(data, dict):
        raise RunnerError(f"{source}: a grid is a mapping with keys {', '.join(TOP_LEVEL)}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise RunnerError(f"{source}: top-level key {unknown[0]!r} is invalid: valid keys are {', '.join(TOP_LEVEL)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RunnerError(f"{source}: name={name!r} is invalid: give the grid a non-empty name")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise RunnerError(f"{source}: base={base!r} is invalid: must be a mapping (a run config)")
    seeds = _seeds(source, data.get("seeds", [0]))
    axes = _axes(source, data.get("axes") or [])
    select = None
    if "select" in data:
        select = parse_selection(source, data["select"], seeds, {k for _, keys in axes for k in keys}, set(valid_keys()))
    spec = GridSpec(name=name, base=base, axes=axes, seeds=seeds, experiment=str(data.get("experiment", "triadapt")),
                    source=source, select=select)
    cells = spec.cells()  # resolve every cell now: a bad value fails before anything trains
    if select:
        check_metric(source, select, cells)
    return spec


def _seeds(source: str, seeds: Any) -> list[int]:
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        raise RunnerError(f"{source}: seeds={seeds!r} is invalid: give a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise RunnerError(f"{source}: seeds={seeds!r} is invalid: duplicate seeds")
    return seeds


def _axes(source: str, axes: Any) -> list[tuple[str, dict[str, list[Any]]]]:
    if not isinstance(axes, list):
        raise RunnerError(f"{source}: axes={axes!r} is invalid: a list of {{product: …}} or {{zip: …}} groups")
    keys_ok = set(valid_keys())
    out = []
    for index, group in enumerate(axes):
        if not isinstance(group, dict) or len(group) != 1 or next(iter(group)) not in ("product", "zip"):
            raise RunnerError(f"{source}: axes[{index}]={group!r} is invalid: each group is {{product: {{key: "
                              f"[values]}}}} or {{zip: {{key: [values]}}}}")
        kind, keys = next(iter(group.items()))
        if not isinstance(keys, dict) or not keys:
            raise RunnerError(f"{source}: axes[{index}].{kind} is invalid: a non-empty mapping of key: [values]")
        for key, values in keys.items():
            if key not in keys_ok:
                raise RunnerError(f"{source}: axis {key!r} is invalid: not a run config key (e.g. task, method, "
                                  f"train.learning_rate, adapter.threshold; see `triadapt train --help`)")
            if key == "train.seed":
                raise RunnerError(f"{source}: axis 'train.seed' is invalid: list seeds under the top-level 'seeds'")
            if not isinstance(values, list) or not values:
                raise RunnerError(f"{source}: axis {key!r}={values!r} is invalid: give a non-empty list of values")
        if kind == "zip" and len({len(v) for v in keys.values()}) > 1:
            lengths = {k: len(v) for k, v in keys.items()}
            raise RunnerError(f"{source}: axes[{index}].zip lists must have equal lengths, got {lengths}")
        out.append((kind, keys))
    return out


def _group_rows(kind: str, keys: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(keys)
    if kind == "zip":
        return [dict(zip(names, values)) for values in zip(*keys.values())]
    return [dict(zip(names, values)) for values in itertools.product(*keys.values())]


def _resolve(source: str, base: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.from_dict(apply_overrides(base, overrides))
    except RunnerError as exc:
        raise RunnerError(f"{source}: {exc}") from None
    except TypeError as exc:
        raise RunnerError(f"{source}: {exc}") from None
