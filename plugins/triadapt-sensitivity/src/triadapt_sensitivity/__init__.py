"""AdaLoRA / IncreLoRA-style gradient-sensitivity scorer for TriAdapt."""

from triadapt_sensitivity.scorer import SensitivityScorer

__all__ = ["SensitivityScorer"]
