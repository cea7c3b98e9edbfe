"""Entry point ``triadapt: sensitivity``: registers the scorer by name, with its typed options."""

from triadapt import ScorerSpec, hookimpl
from triadapt_sensitivity.scorer import SensitivityOptions, SensitivityScorer


def _build(config, options: SensitivityOptions) -> SensitivityScorer:
    return SensitivityScorer(options.beta1, options.beta2)


@hookimpl
def triadapt_scorers():
    return [ScorerSpec("sensitivity", _build, "EMA of |w·∇w| × its uncertainty (AdaLoRA / IncreLoRA), per step",
                       SensitivityOptions)]
