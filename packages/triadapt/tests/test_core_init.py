"""core_init='identity': the core starts as I + the reference draw, and scores read ‖D − I‖_F."""

import math

import pytest
import torch

from triadapt import TriAdaptConfig, inject
from triadapt.errors import ConfigError
from triadapt.layer import AdapterLayer
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import TriangularStructure


def layer_with(core_init: str, *, init_rank=3, capacity=5, seed=7):
    generator = torch.Generator().manual_seed(seed)
    return AdapterLayer(torch.nn.Linear(6, 4), TriangularStructure(core_init), init_rank=init_rank,
                        capacity=capacity, lora_alpha=8.0, dropout=0.0, init_std=0.02, eps=1e-5,
                        generator=generator)


def test_identity_core_is_reference_draw_plus_identity_for_every_unit():
    reference, shifted = layer_with("gaussian"), layer_with("identity")
    for rank in (3, 5):  # initial units and units still waiting to grow
        reference.set_rank(rank), shifted.set_rank(rank)
        d_ref, d_id = reference.factors().core, shifted.factors().core
        torch.testing.assert_close(d_id - d_ref, torch.eye(rank), rtol=0, atol=1e-6)
        torch.testing.assert_close(shifted.factors().down, reference.factors().down, rtol=0, atol=0)


def test_identity_core_keeps_delta_zero_at_start_and_equals_ba_plus_draw():
    layer = layer_with("identity")
    assert torch.count_nonzero(layer.factors().delta_weight()) == 0  # B = 0 for the initial units
    with torch.no_grad():
        for i in range(layer.capacity):
            layer.unit(i)["b"].copy_(torch.arange(4.0) - 1.5)
    f = layer.factors()
    expected = f.up @ f.down + f.up @ (f.core - torch.eye(3)) @ f.down  # B A + B (draw) A
    torch.testing.assert_close(f.delta_weight(), expected, rtol=1e-6, atol=1e-7)


def test_identity_scores_read_the_learned_part_only():
    layer = layer_with("identity", init_rank=2, capacity=2)
    values = {0: {"l": [1.5], "u": [0.5]}, 1: {"l": [2.0, 0.5], "u": [5.0, 2.5]}}
    with torch.no_grad():
        for i, entries in values.items():
            for key, vals in entries.items():
                layer.unit(i)[key].copy_(torch.tensor(vals))
    # D = L + U = [[2,5],[2,3]]; D − I = [[1,5],[2,2]], ‖D − I‖²_F = 1+25+4+4 = 34
    assert FrobeniusScorer("s", "r").normalised_norm(layer) == pytest.approx(math.sqrt(34) / 2, rel=1e-6)


def test_config_rejects_unknown_core_init():
    with pytest.raises(ConfigError, match=r"core_init='eye' is invalid: must be one of gaussian, identity"):
        TriAdaptConfig(core_init="eye")


def test_lora_structure_rejects_identity_core_init():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    config = TriAdaptConfig(structure="lora", core_init="identity", target_modules=["0"], threshold="none")
    with pytest.raises(ConfigError, match=r"core_init='identity' is invalid: structure 'lora' has no core"):
        inject(model, config)
