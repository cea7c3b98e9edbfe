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
    from triadapt.reused_buffers import ReusedBuffers
    from triadapt.stacked_factors import StackedFactors
    from triadapt.unit_storage import rank_masks

    torch.manual_seed(0)
    cap, n, d = 5, 3, 4
    width = n + d + (2 * cap if with_core else 0)
    units = [torch.randn(cap, width, requires_grad=True) for _ in range(3)]
    ranks = (1, 4, 3)
    mask = rank_masks(ranks, cap, torch.float64, torch.device("cpu"))[0].narrow(1, 0, 4)
    blocks = ((0, n), (n, d), (n + d, n + d + cap, cap) if with_core else None)
    weights = [torch.randn(3, 4, size) for size in (n, d, n)]  # a loss that uses all three outputs

    def loss(*u):
        outputs = StackedFactors.apply(mask, 4, blocks, ReusedBuffers(), *u)
        return sum((out * w).sum() for out, w in zip(outputs, weights))

    assert torch.autograd.gradcheck(loss, units)
    loss(*units).backward()
    assert torch.count_nonzero(units[0].grad[1:]) == 0  # rows beyond each rank and beyond the top: zero
    assert all(torch.count_nonzero(unit.grad[4:]) == 0 for unit in units)
    if with_core:  # the l and u padding columns (beyond the top rank) too
        assert all(torch.count_nonzero(unit.grad[:, n + d + 4:n + d + cap]) == 0 for unit in units)
        assert all(torch.count_nonzero(unit.grad[:, n + d + cap + 4:]) == 0 for unit in units)


@pytest.mark.parametrize("with_core", [True, False], ids=["triangular", "lora"])
@pytest.mark.parametrize("used", [(0,), (1,), (2,), (0, 2), (1, 2)], ids=str)
def test_stacked_factors_gradient_when_some_outputs_are_unused(with_core, used):
    """A backward that reaches only some outputs (no regulariser, or the regulariser alone) gets the same
    gradient as autograd: the unused outputs' parts are zero, not left uninitialised."""
    from triadapt.reused_buffers import ReusedBuffers
    from triadapt.stacked_factors import StackedFactors
    from triadapt.unit_storage import rank_masks

    torch.manual_seed(1)
    cap, n, d = 4, 3, 2
    width = n + d + (2 * cap if with_core else 0)
    units = [torch.randn(cap, width, requires_grad=True) for _ in range(2)]
    mask = rank_masks((2, 3), cap, torch.float64, torch.device("cpu"))[0].narrow(1, 0, 3)
    blocks = ((0, n), (n, d), (n + d, n + d + cap, cap) if with_core else None)

    def loss(*u):
        outputs = StackedFactors.apply(mask, 3, blocks, ReusedBuffers(), *u)
        return sum(outputs[index].sin().sum() for index in used)

    assert torch.autograd.gradcheck(loss, units)


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


def test_reused_buffers_hand_out_a_tensor_again_only_when_nothing_else_holds_it():
    from triadapt.reused_buffers import ReusedBuffers

    buffers, like = ReusedBuffers(), torch.zeros(1)
    first = buffers.get("grad", (3, 4), like)
    view = first[1]  # e.g. one parameter's gradient, still held
    second = buffers.get("grad", (3, 4), like)
    assert second.data_ptr() != first.data_ptr()
    third = buffers.get("grad", (3, 4), like)  # ``second`` itself still held
    assert third.data_ptr() != second.data_ptr()
    kept = third.data_ptr()
    del view, first, second, third
    assert buffers.get("grad", (3, 4), like).data_ptr() == kept  # free again: reused
    assert buffers.get("grad", (3, 5), like).shape == (3, 5)  # another shape: a new tensor


@pytest.mark.parametrize("structure", ["triangular", "lora"])
def test_steps_that_reuse_buffers_match_the_per_layer_assembly_and_spare_held_tensors(structure):
    """Training steps with zero_grad(set_to_none=True) (the assembly reuses its buffers) match the per-layer
    path step by step; a gradient the user still holds from the previous step, and a first forward's graph
    still alive during a second forward, are never overwritten."""
    batched, reference = pair(structure)
    optimizers = [torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2) for ctl in (batched, reference)]
    held = None
    for step in range(4):
        for ctl, optimizer in zip((batched, reference), optimizers):
            x, y = toy_batch(seed=step)
            if step == 3:  # two forwards, then one backward through both graphs
                loss = sum(nn.functional.cross_entropy(ctl.model(x + shift), y) for shift in (0.0, 0.5))
            else:
                loss = nn.functional.cross_entropy(ctl.model(x), y)
            (loss + ctl.orthogonal_loss()).backward()
            if ctl is batched and step == 1:
                held = {name: (layer.units.grad, layer.units.grad.clone()) for name, layer in ctl.layers.items()}
            if step < 3:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True) if step < 3 else None
        for name, layer in batched.layers.items():
            torch.testing.assert_close(layer.units, reference.layers[name].units, rtol=1e-10, atol=1e-12)
    for name, layer in batched.layers.items():
        torch.testing.assert_close(layer.units.grad, reference.layers[name].units.grad, rtol=1e-10, atol=1e-12)
        assert torch.equal(held[name][0], held[name][1]), "a gradient still held was overwritten"


def test_unbind_stack_gradient_including_pieces_that_take_no_part():
    from triadapt.reused_buffers import ReusedBuffers
    from triadapt.stacked_factors import unbind_stack

    stack = torch.randn(3, 2, 4, requires_grad=True)
    buffers = ReusedBuffers()
    for used in ((0, 1, 2), (0, 2), (1,)):
        assert torch.autograd.gradcheck(
            lambda s, used=used: sum(unbind_stack(s, buffers, "g")[i].sin().sum() * (i + 1) for i in used), (stack,))
