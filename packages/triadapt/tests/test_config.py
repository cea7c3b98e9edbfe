"""Invalid configurations are rejected on construction, naming field, value and what is valid."""

import json

import pytest

from triadapt import ConfigError, TriAdaptConfig, UnknownStrategyError

INVALID = [
    ({"scorer": "gradnorm"}, "scorer='gradnorm'", "fnorm, fnorm-raw, fnorm-sqrt"),
    ({"threshold": "cubic"}, "threshold='cubic'", "fixed, linear, none, nonlinear"),
    ({"structure": "diagonal"}, "structure='diagonal'", "lora, triangular"),
    ({"init_rank": 0}, "init_rank=0", ">= 1"),
    ({"rank_increment": -1}, "rank_increment=-1", ">= 1"),
    ({"ref_rank": 2.5}, "ref_rank=2.5", "integer"),
    ({"warmup_steps": -3}, "warmup_steps=-3", ">= 0"),
    ({"growth_interval": 0}, "growth_interval=0", ">= 1"),
    ({"total_steps": 50, "warmup_steps": 100}, "total_steps=50", "> warmup_steps (100)"),
    ({"rounding": "round"}, "rounding='round'", "ceil, floor"),
    ({"threshold": "fixed"}, "fixed_k=None", "fixed_k >= 1"),
    ({"dropout": 1.5}, "dropout=1.5", "[0, 1)"),
    ({"init_std": 0.0}, "init_std=0.0", "> 0"),
    ({"max_rank": 2, "init_rank": 4}, "max_rank=2", ">= init_rank (4)"),
    ({"lora_alpha": "16"}, "lora_alpha='16'", "number"),
    ({"orth_reg_weight": -0.1}, "orth_reg_weight=-0.1", ">= 0"),
    ({"target_modules": []}, "target_modules=[]", "non-empty list"),
    ({"target_modules": "query("}, "target_modules='query('", "regular expression"),
    ({"total_budget": 0}, "total_budget=0", ">= 1"),
    ({"init_rank": True}, "init_rank=True", "integer"),
]


@pytest.mark.parametrize("kwargs,names,valid", INVALID, ids=[next(iter(k)) + str(i) for i, (k, _, _) in
                                                             enumerate(INVALID)])
def test_invalid_config_names_field_value_and_valid(kwargs, names, valid):
    with pytest.raises((ConfigError, UnknownStrategyError)) as info:
        TriAdaptConfig(**kwargs)
    message = str(info.value)
    assert names in message and valid in message
    assert "\n" not in message


def test_unknown_field_in_dict_is_named():
    with pytest.raises(ConfigError, match="lr=0.1 is invalid: is not a TriAdaptConfig field"):
        TriAdaptConfig.from_dict({"lr": 0.1})


def test_round_trips_through_json():
    config = TriAdaptConfig(target_modules=["query"], total_steps=5000, threshold="fixed", fixed_k=2)
    assert TriAdaptConfig.from_dict(json.loads(config.to_json())) == config


def test_capacity_defaults():
    assert TriAdaptConfig().capacity == 16
    assert TriAdaptConfig(threshold="none", init_rank=8).capacity == 8
    assert TriAdaptConfig(max_rank=5).capacity == 5


def test_regime_is_derived_from_total_steps():
    """Given T alone, t0 = ΔT = max(1, round(T/50)): 10 000 steps grow every 200 steps, not every 1000."""
    config = TriAdaptConfig(total_steps=10_000)
    assert (config.warmup_steps, config.growth_interval) == (200, 200)
    assert (TriAdaptConfig(total_steps=3).warmup_steps, TriAdaptConfig(total_steps=126).growth_interval) == (1, 3)


def test_explicit_regime_wins_and_each_field_is_derived_alone():
    assert TriAdaptConfig(total_steps=10_000, warmup_steps=500).growth_interval == 200
    config = TriAdaptConfig(total_steps=10_000, warmup_steps=500, growth_interval=100)
    assert (config.warmup_steps, config.growth_interval) == (500, 100)
    assert config.replace(total_steps=1000).growth_interval == 100  # explicit values stay explicit


def test_replace_derives_again_when_t_changes():
    """A trainer that learns T late (TriAdaptCallback, Controller.set_total_steps) gets T/50 of the new T."""
    late = TriAdaptConfig()
    assert late.replace(total_steps=2500).warmup_steps == 50
    assert late.replace(total_steps=2500).replace(total_steps=100).growth_interval == 2


def test_derived_regime_survives_a_round_trip_and_derives_again():
    """A saved and reloaded config (an adapter's JSON) keeps t0 / ΔT derived: a trainer's later T still applies."""
    config = TriAdaptConfig(total_steps=10_000, growth_interval=100)
    data = json.loads(config.to_json())
    assert data["warmup_steps"] is None and data["growth_interval"] == 100 and "_derived" not in data
    rebuilt = TriAdaptConfig.from_dict(data)
    assert rebuilt == config and rebuilt.warmup_steps == 200
    assert rebuilt.replace(total_steps=500).warmup_steps == 10  # derived again, not frozen at 200
    assert rebuilt.replace(total_steps=500).growth_interval == 100  # the explicit one stays
    legacy = TriAdaptConfig.from_dict(json.loads(TriAdaptConfig().to_json()))
    assert legacy.uses_legacy_interval and legacy.replace(total_steps=500).warmup_steps == 10


def test_legacy_interval_without_t_is_deprecated():
    """Without T, t0 = ΔT = 1000 as before 0.2, with a DeprecationWarning naming the replacement."""
    import torch

    from triadapt import inject

    config = TriAdaptConfig(threshold="fixed", fixed_k=1, target_modules=["q"])
    assert config.uses_legacy_interval and (config.warmup_steps, config.growth_interval) == (1000, 1000)
    model = torch.nn.Sequential()
    model.add_module("q", torch.nn.Linear(4, 4))
    ctl = inject(model, config)
    with pytest.warns(DeprecationWarning, match="give total_steps"):
        ctl.step()
    assert not TriAdaptConfig(total_steps=100).uses_legacy_interval
