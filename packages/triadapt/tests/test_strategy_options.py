"""Typed strategy options: a spec's options dataclass is checked by the registry when the config is validated;
each refusal is one line naming the strategy, its distribution, the option, the value and the valid options.
The 0.1 form (a spec without options, reading a dict) keeps working with a DeprecationWarning."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from triadapt import (ConfigError, PluginError, Registry, ScorerSpec, StrategyConfigError, StrategyOptionError,
                      ThresholdSpec, TriAdaptConfig, __version__, hookimpl, inject)
from triadapt.plugins import NoOptions, strategy_options
from triadapt.plugins.options import Owner, build_options, describe
from triadapt.plugins.registry import use_registry
from triadapt.scorers import FrobeniusScorer
from triadapt.testing.models import ToyModel
from triadapt.thresholds import FixedThreshold

DIST = "(distribution triadapt-window 1.2.3)"


@dataclass(frozen=True)
class WindowOptions:
    window: int = 3
    weight: float = 1.0
    mode: Literal["mean", "max"] = "mean"
    layers: Optional[list[str]] = None
    decay: tuple[float, ...] = (0.9,)


class WindowScorer(FrobeniusScorer):
    def __init__(self, options: WindowOptions):
        if options.window > 100:
            raise ValueError(f"window={options.window} is too long\nfor this scorer")  # two lines, on purpose
        super().__init__("window", "r")
        self.options = options


@dataclass(frozen=True)
class NeedsLength:
    length: int  # no default: required


class Plugin:
    @staticmethod
    @hookimpl
    def triadapt_scorers():
        return [ScorerSpec("window", lambda cfg, options: WindowScorer(options), "", WindowOptions),
                ScorerSpec("needs-length", lambda cfg, options: FrobeniusScorer("needs-length", "r"), "", NeedsLength),
                ScorerSpec("legacy", lambda cfg: FrobeniusScorer("legacy", "r")),
                ScorerSpec("legacy-reader", _legacy_reader)]


def _legacy_reader(cfg):
    scorer = FrobeniusScorer("legacy-reader", "r")
    scorer.seen = strategy_options(cfg, "legacy-reader", {"window"})
    return scorer


@pytest.fixture(autouse=True)
def plugin_registry():
    """The plugin registered from a distribution (as an entry point would be), process-wide for the test."""
    registry = Registry(entry_points=False)
    registry.register(Plugin(), name="window-plugin", distribution="triadapt-window", version="1.2.3")
    old = use_registry(registry)
    yield registry
    use_registry(old)


def config(**options):
    return TriAdaptConfig(scorer="window", strategy_options={"window": options})


def test_defaults_are_filled_and_the_factory_gets_an_instance():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], scorer="window",
                                            strategy_options={"window": {"weight": 2, "decay": [0.5, 0.25]}}))
    assert ctl.allocator.scorer.options == WindowOptions(window=3, weight=2.0, mode="mean", decay=(0.5, 0.25))
    assert isinstance(ctl.allocator.scorer.options.weight, float)  # an int given for a float field
    assert inject(ToyModel(), TriAdaptConfig(target_modules=["query"], scorer="window")).allocator.scorer.options \
        == WindowOptions()


def test_unknown_option_is_one_line_naming_strategy_distribution_and_every_option():
    with pytest.raises(StrategyOptionError) as info:
        config(gamma=1)
    assert str(info.value) == (
        f"strategy_options.window.gamma=1 is invalid: scorer 'window' of plugin 'window-plugin' {DIST} has no option "
        f"'gamma'; its options are window: int = 3, weight: float = 1.0, mode: Literal['mean', 'max'] = 'mean', "
        f"layers: Optional[list[str]] = None, decay: tuple[float, ...] = (0.9,)")
    assert isinstance(info.value, ConfigError) and info.value.field == "strategy_options.window.gamma"
    assert (info.value.kind, info.value.strategy) == ("scorer", "window")


@pytest.mark.parametrize("option,value,expected", [
    ("window", "8", "int"), ("window", 8.0, "int"), ("window", True, "int"), ("weight", "1.0", "float"),
    ("mode", "median", "Literal['mean', 'max']"), ("layers", "query", "Optional[list[str]]"),
    ("layers", ["query", 3], "Optional[list[str]]"), ("decay", 0.9, "tuple[float, ...]"),
])
def test_ill_typed_option_names_the_type(option, value, expected):
    with pytest.raises(StrategyOptionError) as info:
        config(**{option: value})
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"strategy_options.window.{option}={value!r} is invalid: option {option!r} of scorer "
                           f"'window' of plugin 'window-plugin' {DIST} must be {expected}; its options are window: int")


def test_options_that_are_not_a_mapping_are_refused():
    with pytest.raises(StrategyOptionError, match=r"strategy_options.window=\[3\] is invalid: the options of scorer "
                                                  r"'window' .* are a mapping of option name -> value"):
        TriAdaptConfig(scorer="window", strategy_options={"window": [3]})


def test_a_required_option_must_be_given():
    with pytest.raises(StrategyOptionError, match=r"strategy_options.needs-length.length=None is invalid: scorer "
                                                  r"'needs-length' .* needs option 'length'; its options are length: "
                                                  r"int$"):
        TriAdaptConfig(scorer="needs-length")
    assert TriAdaptConfig(scorer="needs-length", strategy_options={"needs-length": {"length": 2}})


def test_a_plugin_value_error_is_one_line_naming_plugin_and_distribution():
    model = ToyModel()
    with pytest.raises(StrategyConfigError) as info:
        inject(model, TriAdaptConfig(target_modules=["query"], scorer="window",
                                     strategy_options={"window": {"window": 500}}))
    assert str(info.value) == (f"scorer='window' is invalid: scorer 'window' of plugin 'window-plugin' {DIST} refused "
                               f"the configuration: ValueError: window=500 is too long for this scorer")
    assert isinstance(info.value.__cause__, ValueError) and info.value.provider == f"plugin 'window-plugin' {DIST}"
    assert not any(type(m).__name__ == "AdapterLayer" for m in model.modules())  # refused before the model changed


def test_options_of_strategies_not_chosen_are_left_alone():
    """Options are keyed by name: a grid may carry them for strategies other cells choose."""
    config = TriAdaptConfig(scorer="fnorm", strategy_options={"window": {"gamma": 1}, "not-installed": {"x": 1}})
    assert config.strategy_options["window"] == {"gamma": 1}


def test_built_in_strategies_take_no_options():
    with pytest.raises(StrategyOptionError) as info:
        TriAdaptConfig(threshold="linear", strategy_options={"linear": {"k": 1}})
    assert str(info.value) == ("strategy_options.linear.k=1 is invalid: threshold 'linear' has no option 'k'; it takes "
                               "no options")
    assert build_options(NoOptions, None, Owner("scorer", "fnorm", "")) == NoOptions()


def test_a_built_in_value_error_is_wrapped_without_a_distribution(plugin_registry):
    class Tiny:
        fixed_k = 0  # what TriAdaptConfig would refuse; a hand-made config reaches the strategy
        strategy_options: dict = {}

    with pytest.raises(ConfigError, match="fixed_k=0 is invalid"):
        plugin_registry.create("threshold", "fixed", Tiny())
    with pytest.raises(ValueError, match="fixed_k=0 is invalid"):
        FixedThreshold(0)  # the strategy's own error, which create() would wrap


def test_provider_names_distribution_and_version(plugin_registry):
    assert plugin_registry.provider("scorer", "window") == ("triadapt-window", "1.2.3")
    assert plugin_registry.provider("threshold", "linear") == ("triadapt", __version__)
    plugin_registry.register(Inline(), name="inline")
    assert plugin_registry.provider("threshold", "inline-k") == ("<inline>", "")
    with pytest.raises(KeyError, match="scorer='nope' is unknown"):
        plugin_registry.provider("scorer", "nope")


class Inline:
    @hookimpl
    def triadapt_thresholds(self):
        return [ThresholdSpec("inline-k", lambda cfg, options: FixedThreshold(1), "", NoOptions)]


def test_options_that_are_not_a_dataclass_are_a_registration_error():
    class Bad:
        @hookimpl
        def triadapt_scorers(self):
            return [ScorerSpec("bad-options", lambda cfg, options: None, "", {"window": int})]

    registry = Registry(entry_points=False, strict=True)
    registry.register(Bad(), name="bad", distribution="triadapt-bad")
    with pytest.raises(PluginError, match="ScorerSpec 'bad-options' has options=.* options must be a dataclass"):
        registry.names("scorer")


def test_the_dataclass_own_checks_are_wrapped():
    @dataclass(frozen=True)
    class Positive:
        size: int = 1

        def __post_init__(self):
            if self.size < 1:
                raise ValueError("size must be >= 1")

    with pytest.raises(StrategyConfigError) as info:
        build_options(Positive, {"size": 0}, Owner("scorer", "pos", "plugin 'p' (distribution triadapt-p 1.0)"))
    assert str(info.value) == ("strategy_options.pos={'size': 0} is invalid: scorer 'pos' of plugin 'p' (distribution "
                               "triadapt-p 1.0) refused them: ValueError: size must be >= 1")


def test_describe_shows_default_factories():
    @dataclass(frozen=True)
    class WithFactory:
        names: list = field(default_factory=lambda: ["a"])

    assert describe(WithFactory) == "names: list = ['a']"


# -- the 0.1 form ----------------------------------------------------------------------------------
def test_a_spec_without_options_still_works_and_warns_only_when_given_options():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TriAdaptConfig(scorer="legacy")  # nothing given: nothing to warn about
    with pytest.warns(DeprecationWarning, match=r"strategy_options\['legacy'\] reach scorer 'legacy' of plugin "
                                                r"'window-plugin' \(distribution triadapt-window 1.2.3\) as an untyped "
                                                r"dict; .* declare an options dataclass \(ScorerSpec\(\.\.\., "
                                                r"options=<dataclass>\)\)"):
        TriAdaptConfig(scorer="legacy", strategy_options={"legacy": {"anything": 1}})  # unchecked, as in 0.1


def test_the_strategy_options_helper_still_reads_the_dict_with_one_warning(recwarn):
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], scorer="legacy-reader",
                                            strategy_options={"legacy-reader": {"window": 2}}))
    assert ctl.allocator.scorer.seen == {"window": 2}
    deprecations = [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "options dataclass" in str(deprecations[0].message)  # config and plan: once
    with pytest.raises(StrategyConfigError) as info:
        inject(ToyModel(), TriAdaptConfig(target_modules=["query"], scorer="legacy-reader",
                                          strategy_options={"legacy-reader": {"windw": 2}}))
    assert str(info.value).endswith(f"{DIST} refused the configuration: ValueError: strategy_options.legacy-reader."
                                    f"windw=2 is invalid: the options of 'legacy-reader' are window")
