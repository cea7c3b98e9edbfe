"""The built-in strategies, registered through the same hooks as third-party plugins.

None of them takes options (their settings are `TriAdaptConfig` fields, such as ``fixed_k``), so
each declares `NoOptions`: an option given to one of them is refused by name, not ignored.
"""

from __future__ import annotations

from triadapt.errors import ConfigError
from triadapt.plugins.hookspecs import hookimpl
from triadapt.plugins.specs import NoOptions, ScorerSpec, StructureSpec, ThresholdSpec
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure, TriangularStructure
from triadapt.thresholds import FixedThreshold, LinearThreshold, NoGrowthThreshold, NonlinearThreshold


def _lora_structure(cfg, options: NoOptions) -> LoraStructure:
    if cfg.core_init != "gaussian":
        raise ConfigError("core_init", cfg.core_init, "structure 'lora' has no core: use 'gaussian' (the default)")
    return LoraStructure()


def _fixed_threshold(cfg, options: NoOptions) -> FixedThreshold:
    fixed_k = cfg.fixed_k
    if isinstance(fixed_k, bool) or not isinstance(fixed_k, int) or fixed_k < 1:
        raise ConfigError("fixed_k", fixed_k, "threshold 'fixed' needs an integer fixed_k >= 1")
    return FixedThreshold(fixed_k)


@hookimpl
def triadapt_structures() -> list[StructureSpec]:
    return [
        StructureSpec("triangular", lambda cfg, options: TriangularStructure(core_init=cfg.core_init),
                      "ΔW = B(L+U)A, L/U triangular (TriAdaptLoRA)", NoOptions),
        StructureSpec("lora", _lora_structure, "ΔW = BA (LoRA)", NoOptions),
    ]


def _frobenius(name: str, normalisation: str):
    return lambda cfg, options: FrobeniusScorer(name, normalisation)


@hookimpl
def triadapt_scorers() -> list[ScorerSpec]:
    return [
        ScorerSpec("fnorm", _frobenius("fnorm", "r"), "change of ‖D‖_F / r (paper default)", NoOptions),
        ScorerSpec("fnorm-sqrt", _frobenius("fnorm-sqrt", "sqrt"), "change of ‖D‖_F / √r", NoOptions),
        ScorerSpec("fnorm-raw", _frobenius("fnorm-raw", "none"), "change of ‖D‖_F", NoOptions),
    ]


@hookimpl
def triadapt_thresholds() -> list[ThresholdSpec]:
    return [
        ThresholdSpec("linear", lambda cfg, options: LinearThreshold(), "k = ceil(R·a) (Eq. 13)", NoOptions),
        ThresholdSpec("nonlinear", lambda cfg, options: NonlinearThreshold(), "k = ceil(R^a) (Eq. 14)", NoOptions),
        ThresholdSpec("fixed", _fixed_threshold, "k = fixed_k", NoOptions),
        ThresholdSpec("none", lambda cfg, options: NoGrowthThreshold(), "no growth (LoRA baseline)", NoOptions),
    ]
