"""Load a task's train / validation splits as `datasets.Dataset`s with canonical columns.

Every loader returns rows in the layout of the task's kind: ``text``, optionally
``text_pair``, and ``label`` (int class id, or float for regression); ``prompt`` and
``response`` (sft); ``text`` (lm); SQuAD rows (qa). Sources: built-in offline files, a local
folder in the official GLUE layout, user CSV / JSON / Parquet files with a column mapping, or
the hub. Which columns a file of a kind has and how its labels read is the kind's
(`triadapt_runner.tasks.registry`). Splits are deterministic: a fixed split seed, independent
of the training seed.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from triadapt_runner.tasks.causal_lm import as_instructions  # noqa: F401 (the benchmarks read it from here)
from triadapt_runner.tasks.data import builtin
from triadapt_runner.tasks.registry import KINDS, kind_for
from triadapt_runner.tasks.specs import TASKS, TaskSpec
from triadapt_runner.errors import RunnerError, invalid

SPLIT_SEED = 20250114  # fixed: the train/validation split never depends on the run's seed
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_task(data: Any) -> tuple[TaskSpec, Any]:
    """(task spec, `datasets.DatasetDict` with 'train' and 'validation') for a `DataConfig`."""
    task, rows = load_rows(data)
    return task, as_datasets(rows)


def as_datasets(rows: dict[str, list[dict]]) -> Any:
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_list(split) for name, split in rows.items()})


def load_rows(data: Any) -> tuple[TaskSpec, dict[str, list[dict]]]:
    """(task spec, rows of the 'train' and 'validation' splits) for a `DataConfig`; every check of the data."""
    if data.task == "custom":
        splits = _from_files(data)
        task = KINDS[data.kind].custom_task(data, splits)
    else:
        task = TASKS[data.task]
        splits = _load_known(task, data)
    splits = {name: _subset(rows, limit) for (name, rows), limit in
              zip(splits.items(), (data.max_train_samples, data.max_eval_samples))}
    for name, rows in splits.items():
        if not rows:
            raise RunnerError(f"task {data.task!r}: the {name} split is empty")
    return task, splits


def _load_known(task: TaskSpec, data: Any) -> dict[str, list[dict]]:
    kind = kind_for(task)
    own = kind.read_splits(task, data)
    if own is not None:
        return own
    if task.builtin:
        splits = _from_builtin(task.builtin, data.validation_fraction)
        return {name: kind.from_labelled(rows) for name, rows in splits.items()}
    if data.glue_dir:
        return read_glue_dir(task, Path(data.glue_dir))
    return _from_hub(task)


def _from_builtin(name: str, validation_fraction: float) -> dict[str, list[dict]]:
    path = builtin.fetch(name)
    if name == "drug_reviews":
        both = builtin.read_drug_reviews(path)
        return {"train": _shuffled(both["train"]), "validation": both["test"]}
    rows = _shuffled(builtin.read_rotten_tomatoes(path))
    cut = int(round(len(rows) * validation_fraction))
    return {"train": rows[cut:], "validation": rows[:cut]}


def _shuffled(rows: list[dict]) -> list[dict]:
    rows = list(rows)
    random.Random(SPLIT_SEED).shuffle(rows)
    return rows


def _subset(rows: list[dict], limit: int | None) -> list[dict]:
    return rows if limit is None else rows[:limit]


# -- GLUE local layout ----------------------------------------------------------------------------
def read_glue_dir(task: TaskSpec, root: Path) -> dict[str, list[dict]]:
    """Read ``root/<Task>/train.tsv`` and the dev file in the official GLUE layout."""
    layout = task.glue
    folder = root / layout.folder
    if not folder.is_dir():
        folder = root if (root / "train.tsv").is_file() else folder
    out = {}
    for split, name in (("train", "train.tsv"), ("validation", layout.dev_file)):
        path = folder / name
        if not path.is_file():
            raise RunnerError(f"{path}: not found; the GLUE layout for {task.name!r} is "
                              f"<glue_dir>/{layout.folder}/train.tsv and {layout.dev_file}")
        out[split] = _read_glue_tsv(task, path)
    return out


def _read_glue_tsv(task: TaskSpec, path: Path) -> list[dict]:
    layout = task.glue
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader) if layout.header else None
        columns = {key: _column_index(path, header, getattr(layout, key)) for key in ("text", "pair", "label")
                   if getattr(layout, key) is not None}
        rows = []
        for line_number, fields in enumerate(reader, start=2 if header else 1):
            if not fields or all(not f for f in fields):
                continue
            try:
                label = kind_for(task).parse_label(fields[columns["label"]], task.label_names)
                row = {"text": fields[columns["text"]], "label": label}
                if "pair" in columns:
                    row["text_pair"] = fields[columns["pair"]]
            except (IndexError, ValueError) as exc:
                raise RunnerError(f"{path}:{line_number}: malformed row ({exc})") from None
            rows.append(row)
    return rows


def _column_index(path: Path, header: list[str] | None, column: str | int) -> int:
    if isinstance(column, int):
        return column
    if header is None or column not in header:
        raise RunnerError(f"{path}: column {column!r} not found; header is {header}")
    return header.index(column)


# -- user files -----------------------------------------------------------------------------------
def _from_files(data: Any) -> dict[str, list[dict]]:
    out = {}
    for split, file in (("train", data.train_file), ("validation", data.validation_file)):
        path = Path(file)
        if not path.is_file():
            raise RunnerError(f"data.{split}_file={file!r} is invalid: no such file")
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise invalid(f"data.{split}_file", file, f"use one of the formats {', '.join(sorted(FILE_FORMATS))}")
        out[split] = _map_columns(data, path, _read_table(path, fmt))
    return out


def _read_table(path: Path, fmt: str) -> Any:
    """The rows of a user file as a `datasets.Dataset`; a file without rows is named as such."""
    import datasets

    import logging

    if path.stat().st_size == 0 or not path.read_text(encoding="utf-8", errors="replace").strip():
        raise RunnerError(f"{path}: the file is empty (no header, no rows)")
    if fmt == "json":
        _check_json(path)
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    quiet = logging.getLogger("datasets")
    level, quiet.level = quiet.level, logging.CRITICAL  # datasets logs its own tracebacks before raising
    try:
        table = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except Exception as exc:
        if "corresponds to no data" in str(exc):  # what `datasets` says of a file without rows
            what = "a header but no rows" if fmt == "csv" else "no rows"
            raise RunnerError(f"{path}: the file has {what}") from None
        raise RunnerError(f"{path}: cannot be read as {fmt} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    finally:
        quiet.level = level
    if len(table) == 0:
        raise RunnerError(f"{path}: the file has no rows")
    return table


def _check_json(path: Path) -> None:
    """A JSON array/object, or JSON Lines: a syntax error is named with its line."""
    import json

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as whole:
        first = whole
    for number, line in enumerate(text.splitlines(), start=1):  # JSON Lines: one object per line
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                error = first if number == 1 else exc
                raise RunnerError(f"{path}: not valid JSON or JSON Lines (line {number if number > 1 else first.lineno}: "
                                  f"{error.msg})") from None


def _map_columns(data: Any, path: Path, table: Any) -> list[dict]:
    wanted = KINDS[data.kind].file_columns(data)
    for key, column in wanted.items():
        if column not in table.column_names:
            raise RunnerError(f"data.{key}_column={column!r} is invalid: {path} has columns "
                              f"{', '.join(table.column_names)}")
    rows = []
    for number, row in enumerate(table.select_columns(list(wanted.values())), start=1):
        item = {key: row[column] for key, column in wanted.items()}
        if "label" in item:
            item["label"] = _file_label(data, path, item["label"])
        elif not all(isinstance(v, str) and v for v in item.values()):
            bad = next(k for k, v in item.items() if not (isinstance(v, str) and v))
            raise RunnerError(f"{path}: record {number}: column {wanted[bad]!r} is {item[bad]!r}, not a non-empty text")
        rows.append(item)
    return rows


def _file_label(data: Any, path: Path, value: Any) -> int | float:
    kind = KINDS[data.kind]
    try:
        return kind.parse_label(value)
    except (TypeError, ValueError):
        raise RunnerError(f"{path}: label {value!r} in column {data.label_column!r} is not {kind.label_type}") from None


# -- hub ------------------------------------------------------------------------------------------
def _from_hub(task: TaskSpec) -> dict[str, list[dict]]:
    import datasets

    path, name = task.hub
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as exc:
        raise RunnerError(f"task {task.name!r}: cannot load {path}/{name} from the hub ({type(exc).__name__}); "
                          f"offline, pass data.glue_dir with the official GLUE files") from None
    keys = _hub_keys(task, loaded[task.splits["train"]].column_names)
    return {split: [_hub_row(row, keys) for row in loaded[hub_split]] for split, hub_split in task.splits.items()}


def _hub_keys(task: TaskSpec, columns: list[str]) -> dict[str, str]:
    text_columns = [c for c in columns if c not in ("label", "idx")]
    keys = {"text": text_columns[0], "label": "label"}
    if kind_for(task).pairs:
        keys["text_pair"] = text_columns[1]
    return keys


def _hub_row(row: dict, keys: dict[str, str]) -> dict:
    return {key: row[column] for key, column in keys.items()}
