"""Forward = W0 x + α/(r+ε)·B(L+U)A x, computed here independently from the unit tensors."""

import pytest
import torch

from triadapt.layer import AdapterLayer
from triadapt.structures import LoraStructure, TriangularStructure

ALPHA, EPS = 16.0, 1e-5


def hand_factors(layer: AdapterLayer):
    """A, B, L, U built entry by entry with loops (no index tricks shared with the library)."""
    r = layer.rank
    A = torch.zeros(r, layer.in_features)
    B = torch.zeros(layer.out_features, r)
    L, U = torch.zeros(r, r), torch.zeros(r, r)
    for i in range(r):
        unit = layer.unit(i)
        A[i] = unit["a"].detach()
        B[:, i] = unit["b"].detach()
        if "l" in unit:
            for j in range(i + 1):
                L[i, j] = unit["l"][j].detach()  # row i of L, up to the diagonal
                U[j, i] = unit["u"][j].detach()  # column i of U, down to the diagonal
    return A, B, L, U


def make_layer(structure, rank, capacity=6):
    torch.manual_seed(rank)
    base = torch.nn.Linear(7, 5)
    layer = AdapterLayer(base, structure, init_rank=rank, capacity=capacity, lora_alpha=ALPHA, dropout=0.0,
                         init_std=0.3, eps=EPS)
    with torch.no_grad():  # give B non-zero values so that the update is not trivially zero
        for i in range(layer.capacity):
            layer.unit(i)["b"].normal_()
    return layer


@pytest.mark.parametrize("structure", [TriangularStructure(), LoraStructure()], ids=["triangular", "lora"])
@pytest.mark.parametrize("rank", [1, 2, 3, 6])
def test_forward_matches_independent_formula(structure, rank):
    layer = make_layer(structure, rank)
    x = torch.randn(4, 3, 7)
    A, B, L, U = hand_factors(layer)
    core = L + U if structure.name == "triangular" else torch.eye(rank)
    expected = layer.base_layer(x) + ALPHA / (rank + EPS) * (x @ (B @ core @ A).T)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", [TriangularStructure(), LoraStructure()], ids=["triangular", "lora"])
def test_forward_after_growth_uses_new_rank_and_scale(structure):
    layer = make_layer(structure, 1)
    x = torch.randn(2, 7)
    for rank in (2, 4, 5):
        layer.set_rank(rank)
        A, B, L, U = hand_factors(layer)
        core = L + U if structure.name == "triangular" else torch.eye(rank)
        expected = layer.base_layer(x) + ALPHA / (rank + EPS) * (x @ (B @ core @ A).T)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_initial_update_is_zero_but_b_gets_gradient():
    layer = AdapterLayer(torch.nn.Linear(7, 5), TriangularStructure(), init_rank=2, capacity=4, lora_alpha=ALPHA,
                         dropout=0.0, init_std=0.02, eps=EPS)
    x = torch.randn(3, 7)
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    layer(x).sum().backward()
    grad = layer.units.grad
    assert layer.unit(0, grad)["b"].abs().sum() > 0
    assert layer.unit(0, grad)["a"].abs().sum() == 0  # B = 0 blocks the gradient of A at step 0
    assert torch.count_nonzero(grad[2:]) == 0  # inactive units take no part in the forward


def test_grown_units_are_gaussian_including_b():
    gen = torch.Generator().manual_seed(0)
    layer = AdapterLayer(torch.nn.Linear(300, 400), TriangularStructure(), init_rank=1, capacity=3, lora_alpha=ALPHA,
                         dropout=0.0, init_std=0.02, eps=EPS, generator=gen)
    assert torch.count_nonzero(layer.unit(0)["b"]) == 0
    grown_b = layer.unit(1)["b"]
    assert abs(float(grown_b.detach().std()) - 0.02) < 0.003 and abs(float(grown_b.detach().mean())) < 0.003


def test_dropout_applies_to_adapter_input_only():
    layer = AdapterLayer(torch.nn.Linear(7, 5), LoraStructure(), init_rank=2, capacity=2, lora_alpha=ALPHA,
                         dropout=0.5, init_std=0.3, eps=EPS)
    with torch.no_grad():
        for i in range(layer.capacity):
            layer.unit(i)["b"].normal_()
    x = torch.randn(64, 7)
    layer.eval()
    eval_out = layer(x)
    layer.train()
    torch.manual_seed(1)
    train_out = layer(x)
    assert not torch.allclose(train_out, eval_out)
    layer.set_rank(0)
    torch.testing.assert_close(layer(x), layer.base_layer(x))


def test_bf16_base_keeps_fp32_adapter():
    base = torch.nn.Linear(7, 5).to(torch.bfloat16)
    layer = AdapterLayer(base, TriangularStructure(), init_rank=2, capacity=2, lora_alpha=ALPHA, dropout=0.0,
                         init_std=0.3, eps=EPS)
    with torch.no_grad():
        for i in range(layer.capacity):
            layer.unit(i)["b"].normal_()
    x = torch.randn(3, 7, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16 and layer.unit(0)["a"].dtype == torch.float32
    expected = base(x).float() + x.float() @ layer.delta_weight().T
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("structure", [TriangularStructure(), LoraStructure()], ids=["triangular", "lora"])
@pytest.mark.parametrize("rank", [1, 3, 6])
def test_row_assembly_equals_per_unit_assembly(structure, rank):
    """The fast path (slices of the unit rows) against the per-unit path a plugin structure gets."""
    layer = make_layer(structure, rank)
    fast = structure.assemble_rows(layer.units[:rank], layer.layout)
    slow = structure.assemble([layer.unit(i) for i in range(rank)])
    torch.testing.assert_close(fast.down, slow.down, rtol=0, atol=0)
    torch.testing.assert_close(fast.up, slow.up, rtol=0, atol=0)
    if structure.name == "triangular":
        torch.testing.assert_close(fast.core, slow.core, rtol=0, atol=0)
