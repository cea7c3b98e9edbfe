"""The built-in strategies, registered through the same hooks as third-party plugins."""

from __future__ import annotations

from triadapt.errors import ConfigError
from triadapt.plugins.hookspecs import hookimpl
from triadapt.plugins.specs import ScorerSpec, StructureSpec, ThresholdSpec
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure, TriangularStructure
from triadapt.thresholds import FixedThreshold, LinearThreshold, NoGrowthThreshold, NonlinearThreshold


def _lora_structure(cfg) -> LoraStructure:
    if cfg.core_init != "gaussian":
        raise ConfigError("core_init", cfg.core_init, "structure 'lora' has no core: use 'gaussian' (the default)")
    return LoraStructure()


@hookimpl
def triadapt_structures() -> list[StructureSpec]:
    return [
        StructureSpec("triangular", lambda cfg: TriangularStructure(core_init=cfg.core_init),
                      "ΔW = B(L+U)A, L/U triangular (TriAdaptLoRA)"),
        StructureSpec("lora", _lora_structure, "ΔW = BA (LoRA)"),
    ]


@hookimpl
def triadapt_scorers() -> list[ScorerSpec]:
    return [
        ScorerSpec("fnorm", lambda cfg: FrobeniusScorer("fnorm", "r"), "change of ‖D‖_F / r (paper default)"),
        ScorerSpec("fnorm-sqrt", lambda cfg: FrobeniusScorer("fnorm-sqrt", "sqrt"), "change of ‖D‖_F / √r"),
        ScorerSpec("fnorm-raw", lambda cfg: FrobeniusScorer("fnorm-raw", "none"), "change of ‖D‖_F"),
    ]


@hookimpl
def triadapt_thresholds() -> list[ThresholdSpec]:
    return [
        ThresholdSpec("linear", lambda cfg: LinearThreshold(), "k = ceil(R·a) (Eq. 13)"),
        ThresholdSpec("nonlinear", lambda cfg: NonlinearThreshold(), "k = ceil(R^a) (Eq. 14)"),
        ThresholdSpec("fixed", lambda cfg: FixedThreshold(cfg.fixed_k or 1), "k = fixed_k"),
        ThresholdSpec("none", lambda cfg: NoGrowthThreshold(), "no growth (LoRA baseline)"),
    ]
