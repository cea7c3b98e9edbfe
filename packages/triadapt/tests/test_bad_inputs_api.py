"""Bad input to the Python API: the documented exception, one line naming the field or file, the model unchanged.

`inject` and `load` are atomic: after any failure the model has its modules, ``requires_grad``
flags and weights as before, and a correct call on the same model then works.
"""

import json

import pytest
import torch
from torch import nn

from triadapt import (AdapterLoadError, ConfigError, TargetError, TriAdaptConfig, TriAdaptError,
                      UnknownStrategyError, hookimpl, inject, load)
from triadapt.persistence import CONFIG_FILE, STATE_FILE, WEIGHTS_FILE
from triadapt.plugins import ScorerSpec
from triadapt.scorers import FrobeniusScorer
from triadapt.testing.models import ToyModel

GOOD = dict(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2, total_steps=20, ref_rank=3,
            max_rank=6, seed=0)


def snapshot(model: nn.Module) -> dict:
    return {"modules": [(name, type(m).__name__) for name, m in model.named_modules()],
            "flags": [(name, p.requires_grad) for name, p in model.named_parameters()],
            "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"]
    assert after["flags"] == before["flags"]
    assert after["weights"].keys() == before["weights"].keys()
    for key, value in before["weights"].items():
        assert torch.equal(after["weights"][key], value), key


def assert_one_line(exc: BaseException, pattern: str) -> None:
    import re

    text = str(exc)
    assert "\n" not in text, text
    assert re.search(pattern, text), text


def assert_inject_fails(fields: dict, error: type, pattern: str) -> nn.Module:
    """`inject` of a config with ``fields`` into a fresh ToyModel raises ``error`` in one line matching
    ``pattern`` (or the config already does); the model is unchanged."""
    model = ToyModel()
    before = snapshot(model)
    with pytest.raises(error) as info:
        inject(model, TriAdaptConfig(**fields))
    assert_one_line(info.value, pattern)
    assert_unchanged(model, before)
    return model


# -- the config -----------------------------------------------------------------------------------
CONFIG_CASES = [
    ("unknown-scorer", dict(scorer="gradnorm"), UnknownStrategyError, "scorer='gradnorm' is unknown: available"),
    ("unknown-threshold", dict(threshold="cubic"), UnknownStrategyError, "threshold='cubic' is unknown"),
    ("unknown-structure", dict(structure="dense"), UnknownStrategyError, "structure='dense' is unknown"),
    ("init-rank-zero", dict(init_rank=0), ConfigError, "init_rank=0 is invalid: must be >= 1"),
    ("dropout-one", dict(dropout=1.0), ConfigError, r"dropout=1.0 is invalid: must be in \[0, 1\)"),
    ("rounding", dict(rounding="up"), ConfigError, "rounding='up' is invalid: must be one of ceil, floor"),
    ("fixed-without-k", dict(threshold="fixed"), ConfigError, "fixed_k=None is invalid: threshold 'fixed' needs"),
    ("max-rank-below-init", dict(init_rank=4, max_rank=2), ConfigError, r"max_rank=2 is invalid: must be >= init_rank"),
    ("bad-regex", dict(target_modules="(query"), ConfigError, "target_modules='\\(query' is invalid: is not a valid"),
    ("zero-std", dict(init_std=0.0), ConfigError, "init_std=0.0 is invalid: must be > 0"),
    ("core-init", dict(core_init="ones"), ConfigError, "core_init='ones' is invalid: must be one of gaussian"),
    ("alpha-string", dict(lora_alpha="16"), ConfigError, "lora_alpha='16' is invalid: must be a number"),
    ("rank-float", dict(ref_rank=8.5), ConfigError, "ref_rank=8.5 is invalid: must be an integer"),
    ("negative-lambda", dict(orth_reg_weight=-0.1), ConfigError, "orth_reg_weight=-0.1 is invalid: must be >= 0"),
    ("empty-targets", dict(target_modules=[]), ConfigError, r"target_modules=\[\] is invalid"),
]


@pytest.mark.parametrize("fields,error,pattern", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_field(fields, error, pattern):
    with pytest.raises(error) as info:
        TriAdaptConfig(**fields)
    assert_one_line(info.value, pattern)


def test_unknown_field_from_dict():
    with pytest.raises(ConfigError) as info:
        TriAdaptConfig.from_dict({"rnak": 1})
    assert_one_line(info.value, "rnak=1 is invalid: is not a TriAdaptConfig field; fields are")


# -- inject ---------------------------------------------------------------------------------------
class FailingInitScorer(FrobeniusScorer):
    def initialize(self, layers):
        raise RuntimeError("scorer 'broken-init' cannot read the factors")


class BrokenPlugin:
    @staticmethod
    @hookimpl
    def triadapt_scorers():
        return [ScorerSpec("broken-init", lambda cfg: FailingInitScorer("broken-init", "r"))]


INJECT_CASES = [
    ("budget-below-start", dict(total_budget=4), ConfigError,
     r"total_budget=4 is invalid: must be >= init_rank × matrices = 1 × 8"),
    ("targets-match-nothing", dict(target_modules=["nope"]), TargetError,
     r"target_modules=\['nope'\] matches no linear layer of this model; its linear layers are: blocks\.\*\.query"),
    ("regex-matches-nothing", dict(target_modules=r".*\.attention"), TargetError, "matches no linear layer"),
    ("unknown-head", dict(trainable_modules=["head"]), TargetError,
     r"trainable_modules=\['head'\]: 'head' is not a module of this model"),
    ("no-growth-event", dict(warmup_steps=90, growth_interval=50, total_steps=99), ConfigError,
     "total_steps=99 is invalid: allows no growth event"),
    ("lora-identity-core", dict(structure="lora", core_init="identity"), ConfigError,
     "core_init='identity' is invalid: structure 'lora' has no core"),
    ("plugin-scorer-fails", dict(scorer="broken-init"), RuntimeError, "scorer 'broken-init' cannot read"),
]


@pytest.mark.parametrize("changes,error,pattern", [c[1:] for c in INJECT_CASES], ids=[c[0] for c in INJECT_CASES])
def test_failed_inject_leaves_the_model_as_it_was(changes, error, pattern, register_plugin):
    register_plugin(BrokenPlugin())
    model = assert_inject_fails({**GOOD, **changes}, error, pattern)
    ctl = inject(model, TriAdaptConfig(**GOOD))  # the retry works: no half-injected adapters left behind
    assert len(ctl.layers) == 8


def test_second_inject_is_refused_and_changes_nothing():
    model = ToyModel()
    inject(model, TriAdaptConfig(**GOOD))
    before = snapshot(model)
    with pytest.raises(TriAdaptError) as info:
        inject(model, TriAdaptConfig(**GOOD))
    assert_one_line(info.value, "already holds TriAdapt adapters: call unload")
    assert_unchanged(model, before)


def test_set_total_steps_without_event_names_the_field():
    ctl = inject(ToyModel(), TriAdaptConfig(**{**GOOD, "total_steps": None}))
    with pytest.raises(ConfigError) as info:
        ctl.set_total_steps(3)
    assert_one_line(info.value, "total_steps=3 is invalid: allows no growth event")


# -- load -----------------------------------------------------------------------------------------
class Wider(ToyModel):
    def __init__(self):
        super().__init__(width=10)


class Deeper(ToyModel):
    def __init__(self):
        super().__init__(depth=3)


class MoreClasses(ToyModel):
    def __init__(self):
        super().__init__(classes=5)


@pytest.fixture
def saved(tmp_path):
    from triadapt.testing.conformance import train

    ctl = inject(ToyModel(), TriAdaptConfig(**GOOD))
    train(ctl, 12)
    ctl.save(tmp_path)
    return tmp_path


def _truncate(path):
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _edit_meta(path, change):
    meta = json.loads((path / CONFIG_FILE).read_text())
    change(meta)
    (path / CONFIG_FILE).write_text(json.dumps(meta))


def _reshape_tensor(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["classifier.bias"] = torch.zeros(7)
    save_file(tensors, str(path / WEIGHTS_FILE))


def _drop_tensor(path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors.pop(sorted(k for k in tensors if k.endswith(".0.a"))[0])
    save_file(tensors, str(path / WEIGHTS_FILE))


LOAD_CASES = [
    ("wider-model", Wider, None, False, "base model does not match the adapter: layer 'blocks.0.query' is 10->10 here"),
    ("deeper-model", Deeper, None, False, r"layers the adapter does not know \['blocks.2.down'"),
    ("other-head", MoreClasses, None, False, r"tensor 'classifier.weight' has shape \(3, 8\), expected \(5, 8\)"),
    ("truncated-weights", ToyModel, _truncate, False, "adapter_model.safetensors: not a readable safetensors file"),
    ("missing-weights", ToyModel, lambda p: (p / WEIGHTS_FILE).unlink(), False, "adapter_model.safetensors: not found"),
    ("damaged-json", ToyModel, lambda p: (p / CONFIG_FILE).write_text("{"), False, "triadapt_adapter.json: invalid JSON"),
    ("missing-json", ToyModel, lambda p: (p / CONFIG_FILE).unlink(), False, "triadapt_adapter.json: not found"),
    ("rank-beyond-capacity", ToyModel, lambda p: _edit_meta(p, lambda m: m["rank_pattern"].update(
        {"blocks.0.query": 9})), False, r"rank_pattern\['blocks.0.query'\]=9 is invalid: must be an integer in \[0, 6\]"),
    ("bad-saved-config", ToyModel, lambda p: _edit_meta(p, lambda m: m["config"].update({"rounding": "up"})), False,
     "the saved config is invalid"),
    ("format-version", ToyModel, lambda p: _edit_meta(p, lambda m: m.update({"format_version": 99})), False,
     "format_version=99 is not supported"),
    ("wrong-tensor-shape", ToyModel, _reshape_tensor, False, r"tensor 'classifier.bias' has shape \(7,\)"),
    ("missing-tensor", ToyModel, _drop_tensor, False, "tensors do not match the rank pattern: missing"),
    ("missing-state", ToyModel, lambda p: (p / STATE_FILE).unlink(), True, "triadapt_state.pt: not found"),
]


@pytest.mark.parametrize("model_cls,damage,resume,pattern", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_failed_load_leaves_the_model_as_it_was(saved, model_cls, damage, resume, pattern, tmp_path_factory):
    good = tmp_path_factory.mktemp("good")
    import shutil

    shutil.copytree(saved, good, dirs_exist_ok=True)
    if damage:
        damage(saved)
    model = model_cls()
    before = snapshot(model)
    with pytest.raises(AdapterLoadError) as info:
        load(model, saved, resume_state=resume)
    assert_one_line(info.value, pattern)
    assert_unchanged(model, before)
    if model_cls is ToyModel:  # the same model then takes the intact adapter
        assert load(model, good, resume_state=resume).ranks


def test_failure_after_injection_rolls_back_heads_and_layers(saved):
    state = torch.load(saved / STATE_FILE, weights_only=True)
    state["allocator"]["ranks"] = {"nope": 1}  # passes the file checks; fails inside load_state_dict
    torch.save(state, saved / STATE_FILE)
    model = ToyModel()
    before = snapshot(model)
    with pytest.raises(ValueError, match="allocator state does not fit these adapters"):
        load(model, saved, resume_state=True)
    assert_unchanged(model, before)


def test_step_with_something_that_is_not_an_optimizer():
    """``ctl.step(optimizer)`` with anything but an optimizer: one line, and the step is not counted."""
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=1, growth_interval=1,
                                            total_steps=6, seed=0))
    with pytest.raises(TriAdaptError) as info:
        ctl.step("adamw")
    assert_one_line(info.value, r"optimizer=str is invalid: pass the torch.optim.Optimizer that steps the model")
    assert ctl.step_count == 0 and not ctl.events
