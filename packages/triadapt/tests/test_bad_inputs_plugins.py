"""Bad plugins: each is named (plugin, distribution) in one line; a strict registry raises `PluginError`;
a strategy that fails when used raises before the model is touched, or rolls the model back.
"""

import math
from dataclasses import dataclass

import pytest
import torch

from triadapt import (ConfigError, PluginError, Registry, ScorerSpec, StrategyConfigError, StrategyOptionError,
                      StructureSpec, ThresholdSpec, TriAdaptConfig, UnknownStrategyError, hookimpl, inject)
from triadapt.plugins.registry import use_registry
from triadapt.scorers import FrobeniusScorer
from triadapt.structures import LoraStructure
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel
from triadapt.thresholds import LinearThreshold

from test_bad_inputs_api import assert_inject_fails, assert_one_line


def hook(kind, result):
    """An inline plugin whose ``triadapt_<kind>s`` hook returns ``result`` (or raises it, for an exception)."""

    class Plugin:
        pass

    def impl():
        if isinstance(result, BaseException):
            raise result
        return result

    setattr(Plugin, f"triadapt_{kind}s", staticmethod(hookimpl(impl)))
    return Plugin()


# -- registration: recorded (named, one line) and skipped; strict: PluginError --------------------
REGISTRATION = [
    ("not-a-spec", "scorer", ["fnorm2"], "hook triadapt_scorers failed: TypeError: returned str, expected ScorerSpec"),
    ("wrong-spec-kind", "scorer", [ThresholdSpec("t", lambda c: LinearThreshold())], "returned ThresholdSpec, "
                                                                                     "expected ScorerSpec"),
    ("empty-name", "threshold", [ThresholdSpec("", lambda c: LinearThreshold())], "returned a ThresholdSpec with an "
                                                                                  "empty name"),
    ("factory-not-callable", "structure", [StructureSpec("s", "LoraStructure")], "StructureSpec 's' has a factory that "
                                                                                 "is not callable"),
    ("hook-raises", "threshold", RuntimeError("table unavailable"), "hook triadapt_thresholds failed: RuntimeError: "
                                                                    "table unavailable"),
    ("hook-returns-none", "scorer", None, "hook triadapt_scorers failed: TypeError"),
    ("name-not-a-string", "scorer", [ScorerSpec(3, lambda c: None)], "returned a ScorerSpec with an empty name"),
]


@pytest.mark.parametrize("kind,result,pattern", [c[1:] for c in REGISTRATION], ids=[c[0] for c in REGISTRATION])
def test_bad_registration_is_recorded_and_fatal_when_strict(kind, result, pattern):
    for strict in (False, True):
        registry = Registry(entry_points=False, strict=strict)
        registry.register(hook(kind, result), name="bad-plugin", distribution="triadapt-bad", version="0.1")
        if strict:
            with pytest.raises(PluginError) as info:
                registry.names(kind)
            assert_one_line(info.value, "plugin 'bad-plugin' from distribution 'triadapt-bad' .*" + pattern)
        else:
            assert registry.names(kind)  # the built-ins are still there
            error = {p.name: p for p in registry.plugins()}["bad-plugin"].error
            assert_one_line(RuntimeError(error), pattern)


def test_duplicate_of_a_builtin_name_names_both():
    registry = Registry(entry_points=False)
    registry.register(hook("scorer", [ScorerSpec("fnorm", lambda c: None)]), name="copycat",
                      distribution="triadapt-copycat")
    with pytest.raises(PluginError) as info:
        registry.names("scorer")
    assert_one_line(info.value, "scorer name 'fnorm' is provided twice: by plugin 'triadapt.builtins' \\(distribution "
                                "'triadapt'\\) and by plugin 'copycat' \\(distribution 'triadapt-copycat'\\)")


def test_misspelt_hook_is_refused_at_registration():
    class Typo:
        @hookimpl
        def triadapt_scorer(self):
            return []

    registry = Registry(entry_points=False)
    with pytest.raises(Exception, match="triadapt_scorer"):
        registry.register(Typo(), name="typo")
    assert "typo" not in {p.name for p in registry.plugins()}


def test_same_plugin_twice_is_refused():
    registry = Registry(entry_points=False)
    plugin = hook("scorer", [])
    registry.register(plugin, name="once")
    with pytest.raises(PluginError) as info:
        registry.register(plugin, name="once")
    assert_one_line(info.value, "plugin 'once' is already registered")


def test_failing_growth_observer_is_named_and_fatal_when_strict():
    class Observer:
        @hookimpl
        def triadapt_growth_event(self, event, ranks, context):
            raise RuntimeError("dashboard offline")

    for strict in (False, True):
        registry = Registry(entry_points=False, strict=strict)
        registry.register(Observer(), name="dashboard", distribution="triadapt-dash")
        old = use_registry(registry)
        try:
            ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=1, growth_interval=1,
                                                    total_steps=6, ref_rank=2, max_rank=4, seed=0))
            if strict:
                with pytest.raises(PluginError) as info:
                    train(ctl, 6)
                assert_one_line(info.value, "plugin 'dashboard' from distribution 'triadapt-dash' hook "
                                            "triadapt_growth_event failed: dashboard offline")
            else:
                train(ctl, 6)  # a broken observer does not stop training
                assert "dashboard offline" in {p.name: p for p in registry.plugins()}["dashboard"].error
        finally:
            use_registry(old)


# -- strategies that fail when used ----------------------------------------------------------------
class BadScorer(FrobeniusScorer):
    def __init__(self, result):
        super().__init__("bad-scorer", "r")
        self.result = result

    def scores(self, layers):
        return self.result(layers)


class BadThreshold(LinearThreshold):
    name = "bad-threshold"

    def __init__(self, k):
        self.k = k

    def count(self, ctx):
        if isinstance(self.k, BaseException):
            raise self.k
        return self.k


class ShapelessStructure(LoraStructure):
    name = "shapeless"

    def unit_shapes(self, index, in_features, out_features):
        return {"a": (in_features, "wide")}


@dataclass(frozen=True)
class TunableOptions:
    window: int = 3


def _with_options(cfg, options: TunableOptions):
    if options.window < 1:
        raise ConfigError("strategy_options.tunable.window", options.window, "must be an integer >= 1")
    return FrobeniusScorer("tunable", "r")


def _refusing(cfg, options: TunableOptions):
    raise ValueError(f"window={options.window} does not divide the sequence")


class Strategies:
    @staticmethod
    @hookimpl
    def triadapt_scorers():
        return [ScorerSpec("missing-layer", lambda c: BadScorer(lambda layers: {})),
                ScorerSpec("nan-score", lambda c: BadScorer(lambda layers: {n: math.nan for n in layers})),
                ScorerSpec("list-scores", lambda c: BadScorer(lambda layers: [0.0] * len(layers))),
                ScorerSpec("tunable", _with_options, "", TunableOptions),
                ScorerSpec("refusing", _refusing, "", TunableOptions)]

    @staticmethod
    @hookimpl
    def triadapt_thresholds():
        return [ThresholdSpec("half-k", lambda c: BadThreshold(2.5)), ThresholdSpec("negative-k", lambda c: BadThreshold(-1)),
                ThresholdSpec("raises-k", lambda c: BadThreshold(ZeroDivisionError("T unknown")))]

    @staticmethod
    @hookimpl
    def triadapt_structures():
        return [StructureSpec("shapeless", lambda c: ShapelessStructure())]


GOOD = dict(target_modules=ToyModel.targets, warmup_steps=1, growth_interval=1, total_steps=6, ref_rank=2, max_rank=4,
            seed=0)

AT_INJECT = [  # the model is never touched: inject checks (or rolls back) first
    ("threshold-half-k", dict(threshold="half-k"), PluginError, r"threshold 'bad-threshold' returned k=2.5 at step 2: "
                                                                r"a threshold's count must be an integer >= 0"),
    ("threshold-negative-k", dict(threshold="negative-k"), PluginError, r"returned k=-1 at step 2"),
    ("threshold-raises", dict(threshold="raises-k"), ZeroDivisionError, "T unknown"),
    ("structure-bad-shape", dict(structure="shapeless"), TypeError,
     r"structure 'shapeless': unit_shapes\(0, 8, 8\)\['a'\]=\(8, 'wide'\) is invalid: must be a tuple of positive"),
    ("unknown-option", dict(scorer="tunable", strategy_options={"tunable": {"windw": 2}}), StrategyOptionError,
     r"strategy_options.tunable.windw=2 is invalid: scorer 'tunable' of plugin '\d+' \(distribution <inline>\) has "
     r"no option 'windw'; its options are window: int = 3$"),
    ("ill-typed-option", dict(scorer="tunable", strategy_options={"tunable": {"window": "2"}}), StrategyOptionError,
     r"strategy_options.tunable.window='2' is invalid: option 'window' of scorer 'tunable' .* must be int; its "
     r"options are window: int = 3$"),
    ("plugin-value-error", dict(scorer="refusing"), StrategyConfigError,
     r"scorer='refusing' is invalid: scorer 'refusing' of plugin '\d+' \(distribution <inline>\) refused the "
     r"configuration: ValueError: window=3 does not divide the sequence$"),
    ("bad-option-value", dict(scorer="tunable", strategy_options={"tunable": {"window": 0}}), ConfigError,
     r"strategy_options.tunable.window=0 is invalid: must be an integer >= 1"),
    ("unknown-plugin-name", dict(scorer="sensitivty"), UnknownStrategyError,
     r"scorer='sensitivty' is unknown: available scorers are fnorm, .*tunable"),
]


@pytest.mark.parametrize("changes,error,pattern", [c[1:] for c in AT_INJECT], ids=[c[0] for c in AT_INJECT])
def test_bad_strategy_fails_before_the_model_changes(changes, error, pattern, register_plugin):
    register_plugin(Strategies())
    assert_inject_fails({**GOOD, **changes}, error, pattern)


AT_EVENT = [  # found at the first growth event, named, before any rank changes
    ("missing-layer", r"scorer 'bad-scorer' returned no score for 'blocks.0.query': every adapted layer needs"),
    ("nan-score", r"scorer 'bad-scorer' returned the score nan for 'blocks.0.query'"),
    ("list-scores", r"scorer 'bad-scorer' returned list: scores are a dict of layer name -> number"),
]


@pytest.mark.parametrize("scorer,pattern", AT_EVENT, ids=[c[0] for c in AT_EVENT])
def test_bad_scores_are_named_at_the_event(scorer, pattern, register_plugin):
    register_plugin(Strategies())
    ctl = inject(ToyModel(), TriAdaptConfig(**{**GOOD, "scorer": scorer}))
    ranks = dict(ctl.ranks)
    with pytest.raises(PluginError) as info:
        train(ctl, 6)
    assert_one_line(info.value, pattern)
    assert ctl.ranks == ranks and not ctl.events


def test_strategy_options_must_be_a_mapping():
    with pytest.raises(ConfigError) as info:
        TriAdaptConfig(strategy_options=["window=2"])
    assert_one_line(info.value, r"strategy_options=\['window=2'\] is invalid: must be a dict keyed by strategy name")


def test_a_good_plugin_strategy_trains(register_plugin):
    """The control: the same plugin's valid strategy works."""
    register_plugin(Strategies())
    ctl = inject(ToyModel(), TriAdaptConfig(**{**GOOD, "scorer": "tunable", "strategy_options": {"tunable": {"window": 2}}}))
    train(ctl, 6)
    assert ctl.events and torch.isfinite(torch.tensor(list(ctl.events[0].scores.values()))).all()
