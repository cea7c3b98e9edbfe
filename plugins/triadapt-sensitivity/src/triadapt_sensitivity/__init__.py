"""AdaLoRA / IncreLoRA-style gradient-sensitivity scorer for TriAdapt."""

from triadapt_sensitivity.scorer import SensitivityOptions, SensitivityScorer

__all__ = ["SensitivityOptions", "SensitivityScorer"]
