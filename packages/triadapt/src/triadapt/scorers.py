"""Scorers: the importance S_m of every adapted matrix at a growth event (paper Eq. 11).

Built-ins: ``N_m = ‖core_m‖_F / g(r_m)`` and ``S_m = N_m − N_m(previous event)``, with
g = r (``fnorm``, the paper's default), √r (``fnorm-sqrt``) or 1 (``fnorm-raw``), Table III.
``core_m`` is D = L + U for the triangular structure; for structures without a core the
structure's own norm (‖BA‖_F from r×r Gram matrices for ``lora``) is used. The cost is
O(r²) per matrix per event and nothing per training step.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch

from triadapt.layer import AdapterLayer

Layers = Mapping[str, AdapterLayer]


class Scorer(ABC):
    """Interface of an importance scorer.

    ``initialize`` runs once when the controller is built, ``observe`` after every optimizer
    step when ``observes_steps`` is true (gradients are still in ``param.grad`` then), and
    ``scores`` at each growth event. Larger scores grow first.
    """

    name: str = ""
    observes_steps: bool = False

    def initialize(self, layers: Layers) -> None:
        """Record whatever the first event compares against (default: nothing)."""

    def observe(self, layers: Layers, step: int) -> None:
        """Per-optimizer-step hook, called only when ``observes_steps`` is true."""

    @abstractmethod
    def scores(self, layers: Layers) -> dict[str, float]:
        """S_m for every layer name at a growth event (may update internal state)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"scorer {self.name!r} keeps no state but got keys {sorted(state)}")


def checked_scores(scorer: Scorer, layers: Layers) -> dict[str, float]:
    """``scorer.scores(layers)``, refused with the strategy's name unless every layer has a finite number."""
    from triadapt.errors import PluginError

    scores = scorer.scores(layers)
    if not isinstance(scores, Mapping):
        raise PluginError(f"scorer {scorer.name!r} returned {type(scores).__name__}: scores are a dict of layer "
                          f"name -> number")
    for name in layers:
        value = scores.get(name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            what = "no score" if name not in scores else f"the score {value!r}"
            raise PluginError(f"scorer {scorer.name!r} returned {what} for {name!r}: every adapted layer needs a "
                              f"finite number")
    return {name: float(value) for name, value in scores.items()}


NORMALISERS = {
    "r": lambda r: float(r),
    "sqrt": lambda r: math.sqrt(r),
    "none": lambda r: 1.0,
}


class FrobeniusScorer(Scorer):
    """S_m = ‖D_m‖_F / g(r_m) minus its value at the previous event (Eq. 11)."""

    def __init__(self, name: str, normalisation: str):
        if normalisation not in NORMALISERS:
            raise ValueError(f"normalisation={normalisation!r} is invalid: use one of {sorted(NORMALISERS)}")
        self.name, self.normalisation = name, normalisation
        self.previous: dict[str, float] = {}

    def normalised_norm(self, layer: AdapterLayer) -> float:
        """N_m = ‖D_m‖_F / g(r_m) with r_m the layer's true current rank."""
        if layer.rank == 0:
            return 0.0
        with torch.no_grad():
            norm = layer.structure.importance_norm(layer.factors())
        return float(norm) / NORMALISERS[self.normalisation](layer.rank)

    def normalised_norms(self, layers: Layers) -> dict[str, float]:
        """``normalised_norm`` of every layer, computed in batches by the structure (one transfer per batch)."""
        out = {name: 0.0 for name, layer in layers.items() if layer.rank == 0}
        by_structure: dict[int, list[tuple[str, AdapterLayer]]] = {}
        for name, layer in layers.items():
            if layer.rank > 0:
                by_structure.setdefault(id(layer.structure), []).append((name, layer))
        for group in by_structure.values():
            with torch.no_grad():
                values = group[0][1].structure.importance_norms([layer for _, layer in group])
            for (name, layer), value in zip(group, values):
                out[name] = value / NORMALISERS[self.normalisation](layer.rank)
        return {name: out[name] for name in layers}

    def initialize(self, layers: Layers) -> None:
        self.previous = self.normalised_norms(layers)

    def scores(self, layers: Layers) -> dict[str, float]:
        current = self.normalised_norms(layers)
        result = {name: value - self.previous.get(name, 0.0) for name, value in current.items()}
        self.previous = current
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"previous": dict(self.previous)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.previous = {str(k): float(v) for k, v in state["previous"].items()}
