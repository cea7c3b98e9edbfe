"""Injection: target matching, freezing, counts, Conv1D, errors listing the model's layers."""

import pytest
import torch
from torch import nn

from triadapt import TargetError, TriAdaptConfig, inject
from triadapt.targets import DEFAULT_TARGETS
from triadapt.testing.models import ToyModel, toy_batch


class Conv1D(nn.Module):
    """Same contract as transformers' GPT-2 Conv1D: weight (in, out), y = x W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def test_freezes_base_and_counts_parameters():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query", "value"], ref_rank=2, max_rank=3, init_rank=1))
    trainable = {n for n, p in ctl.model.named_parameters() if p.requires_grad}
    assert all(n.endswith(".triadapt_units") or n.startswith("classifier.") for n in trainable)
    counts = ctl.parameter_counts()
    per_unit = 8 + 8  # a and b of a width-8 matrix
    tri = lambda i: 2 * (i + 1)  # noqa: E731  l and u of unit i
    assert counts["active_adapter"] == 4 * (per_unit + tri(0))
    assert counts["reserved_adapter"] == 4 * sum(per_unit + tri(i) for i in range(3))
    assert counts["heads"] == 8 * 3 + 3
    assert counts["trainable"] == counts["reserved_adapter"] + counts["heads"]


def test_regex_targets():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=r"blocks\.1\.(up|down)"))
    assert list(ctl.layers) == ["blocks.1.up", "blocks.1.down"]


def test_unmatched_targets_list_linear_layers():
    with pytest.raises(TargetError, match=r"matches no linear layer.*blocks\.\*\.query, blocks\.\*\.value"):
        inject(ToyModel(), TriAdaptConfig(target_modules=["q_proj"]))


def test_model_without_defaults_needs_targets():
    with pytest.raises(TargetError, match="model_type=None: no default target set"):
        inject(ToyModel(), TriAdaptConfig())


def test_unknown_trainable_module():
    with pytest.raises(TargetError, match="trainable_modules=\\['head'\\]: 'head' is not a module"):
        inject(ToyModel(), TriAdaptConfig(target_modules=["query"], trainable_modules=["head"]))


def test_double_injection_refused():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"]))
    with pytest.raises(Exception, match="already holds TriAdapt adapters"):
        inject(ctl.model, TriAdaptConfig(target_modules=["value"]))


def test_conv1d_forward_and_merge():
    model = nn.Sequential()
    model.add_module("c_attn", Conv1D(6, 4))
    ctl = inject(model, TriAdaptConfig(target_modules=["c_attn"], init_rank=2, seed=0, trainable_modules=[]))
    layer = ctl.layers["c_attn"]
    with torch.no_grad():
        for i in range(layer.capacity):
            layer.unit(i)["b"].normal_()
    x = torch.randn(3, 4)
    expected = x @ model.c_attn.base_layer.weight + model.c_attn.base_layer.bias + x @ layer.delta_weight().T
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    ctl.merge()
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_default_sets_cover_paper_architectures():
    for kind in ("bert", "roberta", "deberta-v2", "gpt2", "llama"):
        assert DEFAULT_TARGETS[kind]
    assert len(DEFAULT_TARGETS["bert"]) == 6  # the six linear kinds of the paper


def test_training_changes_only_trainable():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], seed=0))
    frozen = ctl.model.blocks[0].value.weight.detach().clone()
    opt = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=0.1)
    x, y = toy_batch()
    torch.nn.functional.cross_entropy(ctl.model(x), y).backward()
    opt.step()
    assert torch.equal(ctl.model.blocks[0].value.weight, frozen)
