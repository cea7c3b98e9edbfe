"""Methods a run can adapt its model with (``approach`` in the run config), one module each."""

from __future__ import annotations

from typing import Any

from triadapt_runner.methods.base import Adapted, Method, MethodPlan, RankRecord
from triadapt_runner.methods.peers import FullFineTune, PeftAdaLora, PeftLora
from triadapt_runner.methods.triadapt_method import IncreLoRAStyle, TriAdapt

APPROACHES: dict[str, Method] = {m.name: m for m in (TriAdapt(), IncreLoRAStyle(), PeftLora(), PeftAdaLora(),
                                                      FullFineTune())}


def method_for(cfg: Any) -> Method:
    return APPROACHES[cfg.approach]


__all__ = ["APPROACHES", "Adapted", "Method", "MethodPlan", "RankRecord", "method_for"]
