"""Read YAML the way users write numbers, with errors that name the file, line and column.

PyYAML follows YAML 1.1, where a float needs a dot: ``1e-4`` and ``2E5`` stay strings. The
loader here also reads as a float every plain scalar that YAML 1.2 or Python's ``float()``
reads as one (``1e-4``, ``+2E5``, ``.5e-3``, ``1_000.5``), so ``learning_rate: 1e-4`` and
``--set train.learning_rate=1e-4`` mean 0.0001. Integers and quoted strings are unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from triadapt_runner.errors import RunnerError

# a plain scalar with an exponent or a dot, digits (underscores between them) on at least one side of the dot
FLOAT = re.compile(r"""^[-+]?(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)
                      (?:[eE][-+]?[0-9]+)?$""", re.X)


class NumberLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 / Python floats such as ``1e-4`` as floats."""


def _float(loader: NumberLoader, node: yaml.Node) -> float:
    return float(loader.construct_scalar(node).replace("_", ""))


NumberLoader.add_constructor("tag:yaml.org,2002:python-float-1.2", _float)
NumberLoader.add_implicit_resolver("tag:yaml.org,2002:python-float-1.2", FLOAT, list("-+0123456789."))


def _resolver_order() -> None:
    """Integers first: ``12`` stays an int; only what the int and float rules of YAML 1.1 miss reaches ours."""
    for first, resolvers in NumberLoader.yaml_implicit_resolvers.items():
        ours = [r for r in resolvers if r[0].endswith("python-float-1.2")]
        NumberLoader.yaml_implicit_resolvers[first] = [r for r in resolvers if r not in ours] + ours


_resolver_order()


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the number rules above."""
    return yaml.load(text, Loader=NumberLoader)  # noqa: S506 (NumberLoader is a SafeLoader)


def read_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RunnerError(f"{path}: {what} file not found")
    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RunnerError(f"{path}: invalid YAML at {where}{getattr(exc, 'problem', exc)}") from None
