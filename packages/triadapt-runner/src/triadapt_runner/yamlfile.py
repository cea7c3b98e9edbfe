"""Read a YAML file with errors that name the file, line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from triadapt_runner.errors import RunnerError


def read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RunnerError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RunnerError(f"{path}: invalid YAML at {where}{getattr(exc, 'problem', exc)}") from None
