"""The runner's own methods, registered through the same hook as a plugin's."""

from __future__ import annotations

from typing import Any

from triadapt.plugins import hookimpl


@hookimpl
def triadapt_methods() -> list[Any]:
    from triadapt_runner.methods.peers import FullFineTune, PeftAdaLora, PeftLora
    from triadapt_runner.methods.peft_tuners import PeftTuners
    from triadapt_runner.methods.triadapt_method import IncreLoRAStyle, TriAdapt

    return [TriAdapt(), IncreLoRAStyle(), PeftLora(), PeftAdaLora(), FullFineTune(), PeftTuners()]
