"""Typed strategy options: a strategy's options dataclass checked against what the user gave.

``build_options(cls, given, owner)`` returns ``cls(**given)`` once every key is a field of
``cls`` and every value has the field's type; defaults fill the rest. Options come from YAML,
JSON or the command line as often as from Python, so the check is strict where a silent
conversion would hide a mistake (the string "8" is not an int, ``True`` is not a number) and
lenient only where nothing is lost (an int for a float field, a list for a tuple field).
Each refusal is one `StrategyOptionError` line naming the strategy (``owner``: its kind, name
and where it comes from), the option, the value and every valid option with its type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from triadapt.errors import StrategyConfigError, StrategyOptionError, TriAdaptError


@dataclasses.dataclass(frozen=True)
class Owner:
    """The strategy an options dataclass belongs to, as error messages name it."""

    kind: str  # structure, scorer or threshold
    name: str
    provider: str  # e.g. "plugin 'cubic' (distribution triadapt-cubic 0.2.0)", or "" for a built-in

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}" + (f" of {self.provider}" if self.provider else "")


class _Mismatch(Exception):
    """A value that does not have the expected type."""


def is_options_class(cls: Any) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def option_types(cls: type) -> dict[str, Any]:
    """Field name -> type of the options dataclass ``cls`` (string annotations resolved where they can be)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something its module cannot resolve: take the annotation as written
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def describe(cls: type) -> str:
    """``beta1: float = 0.85, beta2: float = 0.85``: every option with its type and default."""
    types_ = option_types(cls)
    parts = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        shown = "" if default is dataclasses.MISSING else f" = {default!r}"
        parts.append(f"{f.name}: {type_name(types_[f.name])}{shown}")
    return ", ".join(parts)


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    if isinstance(tp, str):
        return tp
    return repr(tp).replace("typing.", "")


def build_options(cls: type, given: Any, owner: Owner) -> Any:
    """An instance of ``cls`` from ``given`` (a mapping, or None for no options), checked option by option."""
    valid = f"its options are {describe(cls)}" if option_types(cls) else "it takes no options"
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise StrategyOptionError(f"strategy_options.{owner.name}", given,
                                  f"the options of {owner} are a mapping of option name -> value; {valid}",
                                  kind=owner.kind, strategy=owner.name, provider=owner.provider)
    expected = option_types(cls)
    values = {}
    for key, value in given.items():
        field = f"strategy_options.{owner.name}.{key}"
        if key not in expected:
            raise StrategyOptionError(field, value, f"{owner} has no option {key!r}; {valid}",
                                      kind=owner.kind, strategy=owner.name, provider=owner.provider)
        try:
            values[key] = check(expected[key], value)
        except _Mismatch:
            raise StrategyOptionError(field, value, f"option {key!r} of {owner} must be "
                                                    f"{type_name(expected[key])}; {valid}",
                                      kind=owner.kind, strategy=owner.name, provider=owner.provider) from None
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise StrategyOptionError(f"strategy_options.{owner.name}.{f.name}", None,
                                      f"{owner} needs option {f.name!r}; {valid}",
                                      kind=owner.kind, strategy=owner.name, provider=owner.provider)
    try:
        return cls(**values)
    except TriAdaptError:
        raise
    except (ValueError, TypeError) as exc:  # the dataclass's own checks (__post_init__)
        raise StrategyConfigError(f"strategy_options.{owner.name}", dict(given),
                                  f"{owner} refused them: {one_line(exc)}", kind=owner.kind, strategy=owner.name,
                                  provider=owner.provider) from exc


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, whatever the message holds."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def check(tp: Any, value: Any) -> Any:
    """``value`` if it has type ``tp`` (an int for a float comes back as a float, a list for a tuple as a tuple);
    raises `_Mismatch` otherwise. Types this cannot check (``Any``, a string annotation, a protocol) accept
    every value."""
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        for arm in args:
            try:
                return check(arm, value)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise _Mismatch
    if origin is not None:
        return _check_container(origin, args, value)
    return _check_plain(tp, value)


def _check_plain(tp: Any, value: Any) -> Any:
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return value
    if isinstance(tp, type):
        if tp in (tuple, list) and isinstance(value, (list, tuple)):
            return tp(value)
        if not isinstance(value, tp):
            raise _Mismatch
    return value


def _check_container(origin: Any, args: tuple, value: Any) -> Any:
    if origin in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, str]: one type per position
            if len(value) != len(args):
                raise _Mismatch
            return tuple(check(arm, item) for arm, item in zip(args, value))
        element = args[0] if args else Any
        return origin(check(element, item) for item in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {check(key_type, k): check(value_type, v) for k, v in value.items()}
    if isinstance(origin, type) and isinstance(value, origin):
        return value
    raise _Mismatch
