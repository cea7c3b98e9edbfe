"""Scores (Eq. 11) against hand-computed values; S is the change since the previous event."""

import math

import pytest
import torch

from triadapt.layer import AdapterLayer
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure, TriangularStructure


def triangular_layer():
    layer = AdapterLayer(torch.nn.Linear(2, 2), TriangularStructure(), init_rank=2, capacity=3, lora_alpha=1.0,
                         dropout=0.0, init_std=0.1, eps=1e-5)
    values = {0: {"l": [1.0], "u": [4.0]}, 1: {"l": [2.0, 3.0], "u": [5.0, 6.0]}}
    with torch.no_grad():
        for i, entries in values.items():
            for key, vals in entries.items():
                layer.unit(i)[key].copy_(torch.tensor(vals))
    return layer  # L = [[1,0],[2,3]], U = [[4,5],[0,6]]: D = [[5,5],[2,9]], ‖D‖²_F = 135


@pytest.mark.parametrize("normalisation,expected", [
    ("r", math.sqrt(135) / 2), ("sqrt", math.sqrt(135) / math.sqrt(2)), ("none", math.sqrt(135))])
def test_triangular_norm_by_hand(normalisation, expected):
    scorer = FrobeniusScorer("s", normalisation)
    assert scorer.normalised_norm(triangular_layer()) == pytest.approx(expected, rel=1e-6)


def test_lora_norm_is_frobenius_of_ba():
    layer = AdapterLayer(torch.nn.Linear(2, 3), LoraStructure(), init_rank=2, capacity=2, lora_alpha=1.0,
                         dropout=0.0, init_std=0.1, eps=1e-5)
    with torch.no_grad():
        layer.unit(0)["a"].copy_(torch.tensor([1.0, 0.0]))
        layer.unit(1)["a"].copy_(torch.tensor([1.0, 2.0]))
        layer.unit(0)["b"].copy_(torch.tensor([1.0, 0.0, 2.0]))
        layer.unit(1)["b"].copy_(torch.tensor([0.0, 1.0, 1.0]))
    # B = [[1,0],[0,1],[2,1]], A = [[1,0],[1,2]]: BA = [[1,0],[1,2],[3,2]], ‖BA‖²_F = 1+1+4+9+4 = 19
    assert FrobeniusScorer("s", "r").normalised_norm(layer) == pytest.approx(math.sqrt(19) / 2, rel=1e-6)


def test_score_is_change_since_previous_event_with_true_rank():
    layer = triangular_layer()
    scorer = FrobeniusScorer("fnorm", "r")
    scorer.initialize({"m": layer})  # N = sqrt(135)/2
    with torch.no_grad():
        layer.unit(1)["l"][1] = 0.0  # D = [[5,5],[2,6]]: ‖D‖² = 90
    assert scorer.scores({"m": layer})["m"] == pytest.approx(math.sqrt(90) / 2 - math.sqrt(135) / 2, rel=1e-6)
    layer.set_rank(3)
    with torch.no_grad():
        layer.unit(2)["l"].copy_(torch.tensor([0.0, 0.0, 1.0]))
        layer.unit(2)["u"].copy_(torch.tensor([0.0, 0.0, 2.0]))
    # D = [[5,5,0],[2,6,0],[0,0,3]]: ‖D‖² = 99, divided by the true rank 3 (not by the number of events)
    assert scorer.scores({"m": layer})["m"] == pytest.approx(math.sqrt(99) / 3 - math.sqrt(90) / 2, rel=1e-6)
    assert scorer.state_dict() == {"previous": {"m": pytest.approx(math.sqrt(99) / 3)}}


def test_unknown_normalisation_rejected():
    with pytest.raises(ValueError, match="normalisation='cube'"):
        FrobeniusScorer("x", "cube")


@pytest.mark.parametrize("structure,core_init", [("triangular", "gaussian"), ("triangular", "identity"),
                                                 ("lora", "gaussian")])
def test_batched_norms_equal_one_by_one(structure, core_init):
    """The structures' batched importance norms (stacked, masked) equal assembling each matrix alone."""
    from triadapt import TriAdaptConfig, inject
    from triadapt.testing.models import ToyModel

    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, structure=structure, core_init=core_init,
                                            init_rank=1, ref_rank=3, max_rank=6, seed=0))
    layers = list(ctl.layers.values())
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.units.normal_()
            layer.set_rank(1 + i % layer.capacity)  # every rank from 1 to the capacity
    batched = layers[0].structure.importance_norms(layers)
    alone = [layer.structure.importance_norm(layer.factors()) for layer in layers]
    torch.testing.assert_close(torch.tensor(batched), torch.stack(alone), rtol=1e-5, atol=1e-6)
