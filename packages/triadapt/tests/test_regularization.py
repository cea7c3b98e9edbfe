"""Orthogonal regulariser (Eq. 10) against hand-computed values."""

import math

import pytest
import torch

from triadapt import TriAdaptConfig, inject
from triadapt.layer import AdapterLayer
from triadapt.regularization import orthogonal_penalty
from triadapt.structures import LoraStructure
from triadapt.testing.models import ToyModel


def layer_with(a_rows, b_cols):
    n, d = len(a_rows[0]), len(b_cols[0])
    layer = AdapterLayer(torch.nn.Linear(n, d), LoraStructure(), init_rank=len(a_rows), capacity=len(a_rows),
                         lora_alpha=1.0, dropout=0.0, init_std=0.1, eps=1e-5)
    with torch.no_grad():
        for unit, a, b in zip(layer.units, a_rows, b_cols):
            unit.a.copy_(torch.tensor(a))
            unit.b.copy_(torch.tensor(b))
    return layer


def test_penalty_by_hand():
    # A = [[1,0,0],[0,2,0]]: AAᵀ = diag(1,4), ‖AAᵀ − I‖_F = 3
    # B = [[1,1],[0,0]] (columns (1,0),(1,0)): BᵀB = [[1,1],[1,1]], ‖BᵀB − I‖_F = sqrt(2)
    layer = layer_with([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]])
    assert orthogonal_penalty([layer]).item() == pytest.approx((3 + math.sqrt(2)) / 2, rel=1e-6)
    assert orthogonal_penalty([layer], squared=True).item() == pytest.approx((9 + 2) / 2, rel=1e-6)


def test_orthonormal_factors_have_zero_penalty():
    layer = layer_with([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert orthogonal_penalty([layer]).item() == pytest.approx(0.0, abs=1e-7)


def test_controller_weights_by_lambda_and_only_in_training():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], orth_reg_weight=0.3, seed=0))
    expected = 0.3 * orthogonal_penalty(ctl.layers.values())
    torch.testing.assert_close(ctl.orthogonal_loss(), expected)
    assert ctl.orthogonal_loss().requires_grad
    ctl.model.eval()
    assert float(ctl.orthogonal_loss()) == 0.0
    ctl.model.train()
    off = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], orth_reg_weight=0.0))
    assert float(off.orthogonal_loss()) == 0.0


def test_regulariser_never_reuses_factors_from_before_an_optimizer_step():
    from triadapt.testing.models import toy_batch

    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], orth_reg_weight=0.3, seed=0, init_rank=3))
    optimizer = torch.optim.SGD(list(ctl.trainable_parameters()), lr=0.5)
    x, y = toy_batch()
    loss = torch.nn.functional.cross_entropy(ctl.model(x), y) + ctl.orthogonal_loss()  # reuses the forward's factors
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ctl.model(x)  # a forward whose factors are cached ...
    with torch.no_grad():
        for layer in ctl.layers.values():
            layer.units[0].a.mul_(2.0)  # ... then the parameters change in place
    fresh = 0.3 * orthogonal_penalty(ctl.layers.values())
    torch.testing.assert_close(ctl.orthogonal_loss(), fresh)
