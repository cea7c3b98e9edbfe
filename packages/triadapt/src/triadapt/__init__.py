"""TriAdapt: TriAdaptLoRA adapters (ΔW = B(L+U)A) whose ranks grow during training.

Paper: Liang, Wang, Zeng, "TriAdaptLoRA: Brain-Inspired Triangular Adaptive Low-Rank
Adaptation for Parameter-Efficient Fine-Tuning", arXiv 2501.08008 (2025).
"""

from triadapt.allocator import Allocator, GrowthEvent, PlannedEvent
from triadapt.config import TriAdaptConfig
from triadapt.controller import Controller, inject
from triadapt.errors import (AdapterLoadError, ConfigError, PluginError, TargetError, TriAdaptError,
                             UnknownStrategyError)
from triadapt.layer import AdapterLayer
from triadapt.persistence import load_adapter as load
from triadapt.plugins import Registry, ScorerSpec, StructureSpec, ThresholdSpec, hookimpl, registry
from triadapt.scorers import FrobeniusScorer, Scorer
from triadapt.structures import Factors, LoraStructure, Structure, TriangularStructure
from triadapt.thresholds import GrowthContext, Threshold

__version__ = "0.1.0"

__all__ = [
    "AdapterLayer", "AdapterLoadError", "Allocator", "ConfigError", "Controller", "Factors", "FrobeniusScorer",
    "GrowthContext", "GrowthEvent", "LoraStructure", "PlannedEvent", "PluginError", "Registry", "Scorer",
    "ScorerSpec", "Structure", "StructureSpec", "TargetError", "Threshold", "ThresholdSpec", "TriAdaptConfig",
    "TriAdaptError", "TriangularStructure", "UnknownStrategyError", "hookimpl", "inject", "load", "registry",
]
