"""Factors assembled once per model forward (`triadapt.step_assembly`) against each layer's own assembly.

The per-layer path is the reference (its formulas have their own tests); the batched one must
give the same outputs and gradients, keep the reserved rows' gradient exactly zero, and stay
right under gradient accumulation, gradient checkpointing (non-reentrant and reentrant) and
calls that do not go through the model's forward.
"""

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from triadapt import TriAdaptConfig, inject
from triadapt.testing.models import ToyModel, toy_batch


class CheckpointedToy(ToyModel):
    def __init__(self, reentrant: bool):
        super().__init__()
        self.reentrant = reentrant

    def forward(self, x):
        x = x.detach().requires_grad_()  # reentrant checkpointing needs an input that requires grad
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=self.reentrant)
        return self.classifier(x)


pytestmark = pytest.mark.usefixtures("float64")


def injected(structure, model=None):
    config = TriAdaptConfig(structure=structure, target_modules=ToyModel.targets, init_rank=1, ref_rank=3,
                            max_rank=6, seed=0, threshold="none")
    ctl = inject(model if model is not None else ToyModel(), config)
    for index, layer in enumerate(ctl.layers.values()):
        layer.grow(index % 4, step=0)  # ranks 1, 2, 3, 4, 1, ...: stacks of unequal ranks
        with torch.no_grad():
            layer.units.normal_(generator=torch.Generator().manual_seed(index))  # B != 0 everywhere
    return ctl


def pair(structure, model_class=ToyModel, *args):
    """Two identical injected models with unequal ranks; the second assembles per layer."""
    batched, reference = injected(structure, model_class(*args)), injected(structure, model_class(*args))
    reference.assembly.uninstall()
    return batched, reference


def loss_and_grads(ctl, steps=1):
    for step in range(steps):
        x, y = toy_batch(seed=step)
        loss = nn.functional.cross_entropy(ctl.model(x), y) + ctl.orthogonal_loss()
        loss.backward()
    return loss.detach(), {name: layer.units.grad.clone() for name, layer in ctl.layers.items()}


def assert_same(batched, reference, steps=1):
    loss_b, grads_b = loss_and_grads(batched, steps)
    loss_r, grads_r = loss_and_grads(reference, steps)
    torch.testing.assert_close(loss_b, loss_r, rtol=1e-12, atol=1e-12)
    for name, layer in batched.layers.items():
        torch.testing.assert_close(grads_b[name], grads_r[name], rtol=1e-10, atol=1e-12)
        assert torch.count_nonzero(grads_b[name][layer.rank:]) == 0, "reserved rows must get no gradient"


@pytest.mark.parametrize("structure", ["triangular", "lora"])
def test_batched_assembly_matches_per_layer_assembly(structure):
    batched, reference = pair(structure)
    assert len({layer.rank for layer in batched.layers.values()}) > 1
    assert reference.assembly.layers[0].assembly is None
    assert_same(batched, reference)
    x = toy_batch(seed=5)[0]
    torch.testing.assert_close(batched.model(x), reference.model(x), rtol=1e-12, atol=1e-12)


def test_the_forward_uses_the_batched_factors():
    batched, _ = pair("triangular")
    calls = []
    for layer in batched.layers.values():
        layer.factors = lambda layer=layer: calls.append(layer) or type(layer).factors(layer)
    batched.model(toy_batch()[0])
    assert calls == [], "no layer should assemble its own factors inside the model's forward"
    layer = next(iter(batched.layers.values()))
    layer(torch.randn(2, layer.in_features))  # called on its own: assembles itself
    assert calls == [layer]


def test_gradient_accumulation_over_two_forwards():
    batched, reference = pair("triangular")
    assert_same(batched, reference, steps=2)


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_gradient_checkpointing(reentrant):
    batched = injected("triangular", CheckpointedToy(reentrant))
    plain = injected("triangular")
    loss_c, grads_c = loss_and_grads(batched)
    loss_p, grads_p = loss_and_grads(plain)
    torch.testing.assert_close(loss_c, loss_p, rtol=1e-12, atol=1e-12)
    for name in grads_c:
        torch.testing.assert_close(grads_c[name], grads_p[name], rtol=1e-10, atol=1e-12)
    assert_same(*pair("triangular", CheckpointedToy, reentrant))


def test_growth_and_an_optimizer_step_between_forwards_reassemble():
    batched, reference = pair("triangular")
    for ctl in (batched, reference):
        opt = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
        loss_and_grads(ctl)
        opt.step()
        opt.zero_grad()
        next(iter(ctl.layers.values())).grow(1, step=1)
    assert_same(batched, reference)


def test_unload_removes_the_hooks():
    batched, _ = pair("lora")
    model = batched.unload(merge=True)
    assert not model._forward_pre_hooks and not model._forward_hooks
    model(toy_batch()[0])


def test_a_deep_copy_of_the_model_assembles_its_own_layers():
    batched, _ = pair("triangular")
    clone = copy.deepcopy(batched.model)
    with torch.no_grad():
        for module in clone.modules():
            if hasattr(module, "units"):
                module.units.mul_(2.0)
    x = toy_batch()[0]
    assert not torch.allclose(clone(x), batched.model(x))
    clone_layers = [m for m in clone.modules() if hasattr(m, "units")]
    assert all(layer.assembly is not batched.assembly for layer in clone_layers)


def test_a_block_checkpointed_on_its_own_after_an_update_does_not_reuse_stale_factors():
    """After a model forward, an optimizer step changes the units; a block then run and checkpointed outside
    the model's forward must recompute from the new units, as the per-layer path does."""
    batched, reference = pair("triangular")
    for ctl in (batched, reference):
        opt = torch.optim.SGD(list(ctl.trainable_parameters()), lr=0.5)
        loss_and_grads(ctl)
        opt.step()
        opt.zero_grad()
        x = toy_batch()[0].requires_grad_()
        checkpoint(ctl.model.blocks[0], x, use_reentrant=False).square().sum().backward()
    for name, layer in batched.layers.items():
        torch.testing.assert_close(layer.units.grad, reference.layers[name].units.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("with_core", [True, False], ids=["triangular", "lora"])
def test_stacked_factors_gradient_matches_autograd(with_core):
    """The hand-written backward of the fused stacked assembly against torch.autograd.gradcheck."""
    from triadapt.stacked_factors import StackedFactors
    from triadapt.unit_storage import rank_masks

    torch.manual_seed(0)
    cap, n, d = 5, 3, 4
    width = n + d + (2 * cap if with_core else 0)
    stack = torch.randn(3, cap, width, requires_grad=True)
    ranks = (1, 4, 3)
    mask = rank_masks(ranks, cap, torch.float64, torch.device("cpu"))[0].narrow(1, 0, 4)
    blocks = ((0, n), (n, d), (n + d, n + d + cap) if with_core else None)
    weights = [torch.randn(3, 4, size) for size in (n, d, width)]  # a loss that uses all three outputs

    def loss(s):
        return sum((out * w).sum() for out, w in zip(StackedFactors.apply(s, mask, 4, blocks), weights))

    assert torch.autograd.gradcheck(loss, (stack,))
    loss(stack).backward()
    assert torch.count_nonzero(stack.grad[0, 1:]) == 0 and torch.count_nonzero(stack.grad[:, 4:]) == 0


def test_forward_and_regulariser_under_bf16_autocast():
    """Mixed precision: the model's forward and the regulariser inside torch.autocast (bf16). The batched
    assembly and the penalty compute in the units' dtype, so their hand-written backwards get matching dtypes
    (a bf16 core against fp32 factors failed before); the gradient stays near the fp32 one."""
    torch.set_default_dtype(torch.float32)
    batched, _ = pair("triangular")
    grads = []
    for autocast in (True, False):
        x, y = toy_batch()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = nn.functional.cross_entropy(batched.model(x), y) + batched.orthogonal_loss()
        loss.backward()
        grads.append({name: layer.units.grad.clone() for name, layer in batched.layers.items()})
        for layer in batched.layers.values():
            layer.units.grad = None
    for name in grads[0]:
        assert grads[0][name].dtype == torch.float32 and torch.isfinite(grads[0][name]).all()
        error = torch.linalg.norm(grads[0][name] - grads[1][name]) / torch.linalg.norm(grads[1][name])
        assert error < 0.1, (name, float(error))  # bf16 rounding of the base layers and the adapter products
