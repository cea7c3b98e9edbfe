"""Entry point ``triadapt: sensitivity``: registers the scorer by name."""

from triadapt import ScorerSpec, hookimpl
from triadapt_sensitivity.scorer import SensitivityScorer


def _build(config) -> SensitivityScorer:
    options = dict(config.strategy_options.get("sensitivity", {}))
    unknown = sorted(set(options) - {"beta1", "beta2"})
    if unknown:
        raise ValueError(f"strategy_options.sensitivity.{unknown[0]} is invalid: options are beta1, beta2")
    return SensitivityScorer(**options)


@hookimpl
def triadapt_scorers():
    return [ScorerSpec("sensitivity", _build, "EMA of |w·∇w| × its uncertainty (AdaLoRA / IncreLoRA), per step")]
