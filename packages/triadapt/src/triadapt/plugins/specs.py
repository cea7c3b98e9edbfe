"""Named records that strategy hooks return.

A spec names a strategy, says how to build it and, with ``options``, which options it takes: a
dataclass whose fields are the options, with their types and defaults. The registry checks
``TriAdaptConfig.strategy_options[name]`` against it when the config is validated (an unknown,
ill-typed or missing option is a `StrategyOptionError` naming the strategy, its distribution and
the valid options) and calls ``factory(config, options)`` with an instance, defaults filled. A spec
without ``options`` is the 0.1 form: ``factory(config)`` reads its options itself from the dict.

The factory's ``config`` is the `TriAdaptConfig` being built; it is not named as a type here
because the config validates itself through the registry, which sits below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from triadapt.scorers import Scorer
    from triadapt.structures import Structure
    from triadapt.thresholds import Threshold


@dataclass(frozen=True)
class StrategySpec:
    """What every kind of spec holds; the subclasses say which kind the strategy is."""

    name: str
    factory: Callable[..., Any]  # factory(config, options) with ``options``, else factory(config)
    description: str = ""
    options: type | None = None  # a dataclass: its fields are the strategy's options (None: the untyped 0.1 form)


@dataclass(frozen=True)
class StructureSpec(StrategySpec):
    """A structure: ``factory`` returns a `triadapt.structures.Structure`."""

    factory: Callable[..., Structure]


@dataclass(frozen=True)
class ScorerSpec(StrategySpec):
    """A scorer: ``factory`` returns a `triadapt.scorers.Scorer`."""

    factory: Callable[..., Scorer]


@dataclass(frozen=True)
class ThresholdSpec(StrategySpec):
    """A threshold: ``factory`` returns a `triadapt.thresholds.Threshold`."""

    factory: Callable[..., Threshold]


@dataclass(frozen=True)
class NoOptions:
    """The options of a strategy that takes none: any option given to it is refused by name."""


def strategy_options(config: Any, name: str, allowed: set[str]) -> dict:
    """``config.strategy_options[name]`` checked against the option names a strategy accepts (the 0.1 form).

    Deprecated since 0.2 (goes in 0.3), with the spec form it serves: declare an options dataclass on the spec
    instead (``ScorerSpec(name, factory, description, options=MyOptions)``); the factory then gets an instance
    of it, checked and with its defaults filled. The registry warns when options reach a spec without one.
    """
    options = dict(config.strategy_options.get(name, {}) or {})
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"strategy_options.{name}.{unknown[0]}={options[unknown[0]]!r} is invalid: the options of "
                         f"{name!r} are {', '.join(sorted(allowed)) or 'none'}")
    return options
