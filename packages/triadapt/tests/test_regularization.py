"""Orthogonal regulariser (Eq. 10) against hand-computed values."""

import math

import pytest
import torch

from triadapt import TriAdaptConfig, inject
from triadapt.layer import AdapterLayer
from triadapt.regularization import orthogonal_penalty
from triadapt.structures import LoraStructure
from triadapt.testing.models import ToyModel, toy_batch


def layer_with(a_rows, b_cols):
    n, d = len(a_rows[0]), len(b_cols[0])
    layer = AdapterLayer(torch.nn.Linear(n, d), LoraStructure(), init_rank=len(a_rows), capacity=len(a_rows),
                         lora_alpha=1.0, dropout=0.0, init_std=0.1, eps=1e-5)
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(a_rows, b_cols)):
            layer.unit(i)["a"].copy_(torch.tensor(a))
            layer.unit(i)["b"].copy_(torch.tensor(b))
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
            layer.unit(0)["a"].mul_(2.0)  # ... then the parameters change in place
    fresh = 0.3 * orthogonal_penalty(ctl.layers.values())
    torch.testing.assert_close(ctl.orthogonal_loss(), fresh)


@pytest.mark.parametrize("squared", [False, True])
def test_group_penalty_gradient_matches_autograd(squared):
    """The hand-written gradient of the batched penalty against torch.autograd.gradcheck (float64)."""
    from triadapt.regularization import GroupPenalty
    from triadapt.reused_buffers import ReusedBuffers
    from triadapt.unit_storage import rank_masks

    torch.manual_seed(0)
    units = [torch.randn(4, 9, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    mask, eye = rank_masks((1, 3, 4), 4, torch.float64, torch.device("cpu"))
    columns = ((0, 5), (5, 4))
    def penalty(*u):
        rows = torch.stack(u) * mask
        blocks = (rows.narrow(2, start, width) for start, width in columns)
        return GroupPenalty.apply(eye, squared, ReusedBuffers(), *blocks)

    assert torch.autograd.gradcheck(penalty, units)


def test_group_penalty_equals_one_by_one():
    """Batched over matrices of different ranks = the mean of the per-matrix Gram deviations."""
    model = ToyModel()
    ctl = inject(model, TriAdaptConfig(target_modules=ToyModel.targets, init_rank=1, ref_rank=3, max_rank=6, seed=0))
    layers = list(ctl.layers.values())
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.units.normal_()
            layer.set_rank(1 + i % layer.capacity)
    expected = []
    for layer in layers:
        f = layer.factors()
        expected += [torch.linalg.matrix_norm(f.down @ f.down.T - torch.eye(layer.rank)),
                     torch.linalg.matrix_norm(f.up.T @ f.up - torch.eye(layer.rank))]
    torch.testing.assert_close(orthogonal_penalty(layers), torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_the_penalty_reuses_the_forward_stack_and_falls_back_after_a_backward():
    """With the model's forward just run, the regulariser works on the A and Bᵀ step_assembly stacked (same
    value and gradient as on its own stack); after a backward went through them it stacks its own."""
    model = ToyModel()
    ctl = inject(model, TriAdaptConfig(target_modules=ToyModel.targets, init_rank=1, ref_rank=3, max_rank=6, seed=0))
    for index, layer in enumerate(ctl.layers.values()):
        layer.grow(index % 3, step=0)
    x = toy_batch()[0]
    ctl.model(x).sum().backward()  # a backward through this forward's stacked rows
    for layer in ctl.layers.values():
        layer.units.grad = None
    alone = ctl.orthogonal_loss()  # so the regulariser must stack its own (else: backward through a freed graph)
    alone.backward()
    expected = {name: layer.units.grad.clone() for name, layer in ctl.layers.items()}
    stacks = []
    for layer in ctl.layers.values():
        layer.units.grad = None
    out = ctl.model(x)
    original = ctl.assembly.stacked_blocks
    ctl.assembly.stacked_blocks = lambda layers: stacks.append(original(layers)) or stacks[-1]
    reused = ctl.orthogonal_loss()
    ctl.assembly.stacked_blocks = original
    assert stacks and all(blocks is not None for blocks in stacks)
    torch.testing.assert_close(reused, alone)
    (out.sum() + reused).backward()
    both = {name: layer.units.grad.clone() for name, layer in ctl.layers.items()}
    for layer in ctl.layers.values():
        layer.units.grad = None
    ctl.model(x).sum().backward()
    for name, layer in ctl.layers.items():  # the penalty's share of the gradient, through the reused stack
        torch.testing.assert_close(both[name] - layer.units.grad, expected[name])


def test_a_penalty_after_a_no_grad_forward_still_has_a_gradient():
    """An evaluation forward under no_grad, then the penalty with autograd on (before the next forward): the
    no-grad stack must not be reused, or the penalty would give the units no gradient."""
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, init_rank=2, ref_rank=3, max_rank=6,
                                            seed=0))
    with torch.no_grad():
        ctl.model(toy_batch()[0])
    ctl.orthogonal_loss().backward()
    assert all(layer.units.grad is not None and torch.count_nonzero(layer.units.grad) > 0
               for layer in ctl.layers.values())
