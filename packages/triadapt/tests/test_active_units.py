"""`AdapterLayer.active_unit_tensors()` (the 0.2 form) and the deprecated `active_units()`, which keeps code
written against 0.1 (a module per unit: ``parameters()``, ``named_parameters()``, ``tensors()``, ``.grad``)
working, with a DeprecationWarning naming the replacement."""

import warnings

import pytest
import torch

from triadapt import ScorerSpec, TriAdaptConfig, hookimpl, inject
from triadapt.scorers import Scorer
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel, toy_batch


def trained_layer(structure="triangular"):
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], structure=structure, init_rank=3, seed=0,
                                            threshold="none"))
    x, y = toy_batch()
    torch.nn.functional.cross_entropy(ctl.model(x), y).backward()
    return next(iter(ctl.layers.values()))


def test_active_unit_tensors_are_views_of_the_active_rows():
    layer = trained_layer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 0.2 form does not warn
        units = list(layer.active_unit_tensors())
        grads = list(layer.active_unit_tensors(layer.units.grad))
    assert len(units) == layer.rank == 3
    for index, (unit, grad) in enumerate(zip(units, grads)):
        assert set(unit) == {"a", "b", "l", "u"} and unit["l"].shape == (index + 1,)
        assert unit["a"].data_ptr() == layer.units[index].data_ptr()  # a view, not a copy
        torch.testing.assert_close(grad["a"], layer.units.grad[index, : layer.in_features])
    assert any(bool(g.any()) for grad in grads for g in grad.values())


@pytest.mark.parametrize("structure", ["triangular", "lora"])
def test_active_units_keeps_the_0_1_module_calls_and_warns(structure):
    layer = trained_layer(structure)
    with pytest.warns(DeprecationWarning, match=r"active_units\(\) is deprecated since 0.2 .* use "
                                                r"active_unit_tensors\(\)"):
        legacy = list(layer.active_units())
    new, grads = list(layer.active_unit_tensors()), list(layer.active_unit_tensors(layer.units.grad))
    assert len(legacy) == layer.rank
    for unit, tensors, grad in zip(legacy, new, grads):
        named = dict(unit.named_parameters())
        assert list(named) == list(tensors) and list(unit.tensors()) == list(tensors)
        for key, param in named.items():
            torch.testing.assert_close(param, tensors[key])
            torch.testing.assert_close(param.grad, grad[key])  # .grad as a 0.1 unit parameter had it
        assert [p.data_ptr() for p in unit.parameters()] == [t.data_ptr() for t in tensors.values()]
        assert unit.a is unit["a"] and dict(unit.items()).keys() == tensors.keys()  # also the 0.2 mapping
    assert sum(p.numel() for unit in legacy for p in unit.parameters()) == layer.unit_numel()
    with pytest.raises(AttributeError, match="rank unit has no tensor 'z'"):
        legacy[0].z


def test_active_units_without_gradients_leaves_grad_unset():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], threshold="none", seed=0))
    layer = next(iter(ctl.layers.values()))
    with pytest.warns(DeprecationWarning):
        (unit,) = layer.active_units()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as a 0.1 parameter without gradient: None, and no warning to read it
        assert layer.units.grad is None and all(t.grad is None for t in unit.tensors().values())
    assert all(t.is_leaf and t.requires_grad for t in unit.parameters())


class ScorerFrom010(Scorer):
    """Written against the documented 0.1 API: iterates active_units() and their parameters' gradients."""

    name = "v010"

    def scores(self, layers):
        out = {}
        for name, layer in layers.items():
            total, count = 0.0, 0
            for unit in layer.active_units():
                for param in unit.parameters():
                    count += param.numel()
                    if param.grad is not None:
                        total += float((param.detach() * param.grad).abs().sum())
            out[name] = total / count
        return out


class Plugin010:
    @hookimpl
    def triadapt_scorers(self):
        return [ScorerSpec("v010", lambda cfg: ScorerFrom010())]


def test_a_0_1_scorer_still_drives_growth(register_plugin):
    register_plugin(Plugin010(), name="v010")
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, scorer="v010", warmup_steps=1,
                                            growth_interval=1, total_steps=6, ref_rank=2, max_rank=4, seed=0))
    with pytest.warns(DeprecationWarning, match="active_unit_tensors"):
        train(ctl, 6)
    assert ctl.events and all(score > 0 for score in ctl.events[0].scores.values())
