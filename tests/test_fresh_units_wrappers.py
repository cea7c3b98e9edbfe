"""The fresh-unit correction reaches the real optimizer through accelerate's wrapper (as in the runner)."""

import warnings

import torch
from accelerate import Accelerator

from triadapt import TriAdaptConfig, inject
from triadapt.testing.models import ToyModel, toy_batch


def young_model():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, init_rank=2, ref_rank=3, max_rank=6,
                                            seed=0, threshold="none"))
    for layer in ctl.layers.values():
        layer.grow(2, step=1)  # rows 2, 3 joined after step 1: at step 3 their age is 2, the parameter's 3
    return ctl


def trained(wrap):
    ctl = young_model()
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
    stepped = wrap(optimizer)
    for step in range(3):
        x, y = toy_batch(seed=step)
        torch.nn.functional.cross_entropy(ctl.model(x), y).backward()
        stepped.step()
        stepped.zero_grad()
    return ctl, stepped


def test_accelerated_optimizer_gets_the_young_unit_correction():
    accelerator = Accelerator(cpu=True)
    bare, bare_opt = trained(lambda opt: opt)
    wrapped, wrapped_opt = trained(accelerator.prepare_optimizer)
    assert type(wrapped_opt).__name__ == "AcceleratedOptimizer"
    before = {n: l.units.detach().clone() for n, l in wrapped.layers.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "shares the step count" warning: the AdamW inside was found
        bare.refresher(bare_opt, 3)
        wrapped.refresher(wrapped_opt, 3)
    for name, layer in wrapped.layers.items():
        assert not torch.equal(layer.units[2:4], before[name][2:4])  # the young rows were corrected
        torch.testing.assert_close(layer.units, bare.layers[name].units, rtol=0, atol=0)
