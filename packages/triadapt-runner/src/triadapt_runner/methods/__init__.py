"""Methods a run can adapt its model with (``approach`` in the run config), one module each.

Every method, built-in or from a plugin, is a `Method` registered through the ``triadapt_methods``
hook (`triadapt_runner.methods.registry`); the runner looks methods up by name and never asks which
one it holds.
"""

from __future__ import annotations

import warnings
from typing import Any

from triadapt_runner.methods.base import Adapted, Method, MethodPlan, RankRecord
from triadapt_runner.methods.registry import MethodRegistry, method_for, methods, use_methods


def __getattr__(name: str) -> Any:
    if name == "APPROACHES":  # 0.1.0: a closed dict of the built-in methods
        warnings.warn("triadapt_runner.methods.APPROACHES is deprecated and will be removed in 0.3: use "
                      "triadapt_runner.methods.methods().get(name) / .names(), which include plugin methods",
                      DeprecationWarning, stacklevel=2)
        return {name: methods().get(name) for name in methods().names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Adapted", "Method", "MethodPlan", "MethodRegistry", "RankRecord", "method_for", "methods", "use_methods"]
