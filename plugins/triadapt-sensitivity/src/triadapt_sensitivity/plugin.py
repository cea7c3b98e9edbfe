"""Entry point ``triadapt: sensitivity``: registers the scorer by name."""

from triadapt import ScorerSpec, hookimpl
from triadapt.plugins import strategy_options
from triadapt_sensitivity.scorer import SensitivityScorer


def _build(config) -> SensitivityScorer:
    return SensitivityScorer(**strategy_options(config, "sensitivity", {"beta1", "beta2"}))


@hookimpl
def triadapt_scorers():
    return [ScorerSpec("sensitivity", _build, "EMA of |w·∇w| × its uncertainty (AdaLoRA / IncreLoRA), per step")]
