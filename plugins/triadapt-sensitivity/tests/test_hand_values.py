"""Sensitivity scores against hand computation."""

import importlib.metadata as md

import pytest
import torch

from triadapt import StrategyConfigError, StrategyOptionError, TriAdaptConfig, inject, registry
from triadapt.layer import AdapterLayer
from triadapt.structures import LoraStructure
from triadapt.testing.models import ToyModel, toy_batch
from triadapt_sensitivity import SensitivityOptions, SensitivityScorer

VERSION = md.version("triadapt-sensitivity")  # as installed


def test_scalar_emas_by_hand():
    """One matrix, rank 1, every entry w = 2 with gradient 0.5: I = 1 at every step.

    step 1: Ī = 0.15, Ū = 0.15·|1 − 0.15| = 0.1275
    step 2: Ī = 0.85·0.15 + 0.15 = 0.2775, Ū = 0.85·0.1275 + 0.15·|1 − 0.2775| = 0.21675
    score = mean(Ī·Ū) = 0.2775 · 0.21675 = 0.060148125
    """
    layer = AdapterLayer(torch.nn.Linear(2, 3), LoraStructure(), init_rank=1, capacity=2, lora_alpha=1.0,
                         dropout=0.0, init_std=0.1, eps=1e-5)
    scorer = SensitivityScorer(0.85, 0.85)
    for step in (1, 2):
        layer.units.grad = torch.zeros_like(layer.units)  # as a backward gives it: zero on the reserved unit
        for p, g in zip(layer.unit(0).values(), layer.unit(0, layer.units.grad).values()):
            with torch.no_grad():
                p.fill_(2.0)
            g.fill_(0.5)
        scorer.observe({"m": layer}, step)
    assert scorer.scores({"m": layer})["m"] == pytest.approx(0.060148125, rel=1e-6)
    assert torch.count_nonzero(scorer.ipt["m"][1:]) == 0  # the inactive unit's averages stay zero


def test_toy_training_matches_recorded_weights_and_gradients():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query", "value"], scorer="sensitivity", init_rank=2,
                                            threshold="none", seed=0,
                                            strategy_options={"sensitivity": {"beta1": 0.7, "beta2": 0.6}}))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
    expected_ipt, expected_unc = {}, {}
    for step in range(4):
        x, y = toy_batch(seed=step)
        torch.nn.functional.cross_entropy(ctl.model(x), y).backward()
        optimizer.step()
        for name, layer in ctl.layers.items():
            for i in range(layer.rank):
                for key, p in layer.unit(i).items():
                    k = f"{name}/{i}/{key}"
                    now = (p.detach() * layer.unit(i, layer.units.grad)[key]).abs()
                    ipt = 0.7 * expected_ipt.get(k, torch.zeros_like(now)) + 0.3 * now
                    expected_unc[k] = 0.6 * expected_unc.get(k, torch.zeros_like(now)) + 0.4 * (now - ipt).abs()
                    expected_ipt[k] = ipt
        ctl.step()
        optimizer.zero_grad()
    scores = ctl.allocator.scorer.scores(ctl.layers)
    for name, layer in ctl.layers.items():
        keys = [k for k in expected_ipt if k.startswith(name + "/")]
        total = sum(float((expected_ipt[k] * expected_unc[k]).sum()) for k in keys)
        count = sum(expected_ipt[k].numel() for k in keys)
        assert scores[name] == pytest.approx(total / count, rel=1e-5)


def test_bad_options_are_named():
    with pytest.raises(StrategyOptionError) as info:
        inject(ToyModel(), TriAdaptConfig(target_modules=["query"], scorer="sensitivity",
                                          strategy_options={"sensitivity": {"gamma": 1}}))
    assert str(info.value) == ("strategy_options.sensitivity.gamma=1 is invalid: scorer 'sensitivity' of plugin "
                               f"'sensitivity' (distribution triadapt-sensitivity {VERSION}) has no option 'gamma'; "
                               "its options are beta1: float = 0.85, beta2: float = 0.85")
    with pytest.raises(ValueError, match="beta1=1.5 is invalid"):
        SensitivityScorer(beta1=1.5)


@pytest.mark.parametrize("value", ["0.9", None, [0.9]])
def test_ill_typed_option_is_named(value):
    with pytest.raises(StrategyOptionError) as info:
        TriAdaptConfig(scorer="sensitivity", strategy_options={"sensitivity": {"beta2": value}})
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"strategy_options.sensitivity.beta2={value!r} is invalid: option 'beta2' of "
                                      f"scorer 'sensitivity' of plugin 'sensitivity' (distribution "
                                      f"triadapt-sensitivity {VERSION}) must be float")


def test_options_reach_the_scorer_with_defaults_filled():
    config = TriAdaptConfig(target_modules=["query"], scorer="sensitivity", threshold="none",
                            strategy_options={"sensitivity": {"beta1": 0}})  # an int for a float field is a float
    scorer = inject(ToyModel(), config).allocator.scorer
    assert (scorer.beta1, scorer.beta2) == (0.0, 0.85) and isinstance(scorer.beta1, float)
    assert registry().resolve_options("scorer", "sensitivity", {"beta2": 0.5}) == SensitivityOptions(0.85, 0.5)


def test_a_refused_value_is_one_line_naming_the_distribution():
    with pytest.raises(StrategyConfigError) as info:
        TriAdaptConfig(scorer="sensitivity", strategy_options={"sensitivity": {"beta1": 1.5}})
    assert str(info.value) == ("strategy_options.sensitivity={'beta1': 1.5} is invalid: scorer 'sensitivity' of "
                               f"plugin 'sensitivity' (distribution triadapt-sensitivity {VERSION}) refused them: "
                               "ValueError: strategy_options.sensitivity.beta1=1.5 is invalid: must be in [0, 1)")
    assert isinstance(info.value.__cause__, ValueError)
