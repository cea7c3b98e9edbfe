"""Merge / unmerge / unload give the same outputs as the unmerged adapter."""

import torch

from triadapt import AdapterLayer, TriAdaptConfig, inject
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel, toy_batch


def test_merge_unmerge_and_unload_match():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2,
                                            total_steps=12, seed=0))
    train(ctl, 12)
    ctl.model.eval()
    x = toy_batch(seed=5)[0]
    reference = ctl.model(x).detach()
    ctl.merge()
    assert all(layer.merged for layer in ctl.layers.values())
    torch.testing.assert_close(ctl.model(x), reference, rtol=1e-5, atol=1e-6)
    ctl.unmerge()
    torch.testing.assert_close(ctl.model(x), reference, rtol=1e-5, atol=1e-6)
    plain = ctl.unload()
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert isinstance(plain.blocks[0].query, torch.nn.Linear)
    torch.testing.assert_close(plain(x), reference, rtol=1e-5, atol=1e-6)
