"""peft config objects built from plain fields, every bad field reported in one line before a run starts.

peft's config classes are dataclasses that store whatever they are given: ``r: "eight"`` passes
construction and fails deep inside injection, after the MLflow run exists, in a traceback that
names no field. So a field is first checked against its class's annotations, then the class is
constructed (its ``__post_init__`` checks how the fields fit together), and whatever peft
raises becomes ``<prefix>.<field>=<value> is invalid: ...`` naming the field that caused it.
Used by ``approach: peft`` and by the ``peft-lora`` / ``peft-adalora`` presets alike, so all
of them build their config the same way. peft is imported on first use (it takes seconds).
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from typing import Any, Iterable

from triadapt_runner.errors import RunnerError, invalid

# Bookkeeping that peft or the runner sets; a run config that set them would break saving or training.
RESERVED = ("auto_mapping", "base_model_name_or_path", "inference_mode", "peft_version", "revision")
# peft annotates LoRA's and the LyCORIS tuners' alpha as int but only divides by it: any real number works.
NUMBER_FIELDS = ("alpha", "lora_alpha")


def peft_types() -> dict[str, type]:
    """peft's config class per peft type (``LORA``, ``LOHA``, …), as peft 0.21 maps them."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(key, "value", key)): cls for key, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def canonical_type(value: Any, prefix: str = "peft") -> str:
    """``value`` spelt as peft spells the type (any case accepted), or a one-line error listing them."""
    known = peft_types()
    if isinstance(value, str) and value.upper() in known:
        return value.upper()
    raise invalid(f"{prefix}.peft_type", value, f"use one of peft's types (any case): {', '.join(sorted(known))}")


def build(peft_type: str, fields: dict[str, Any], given: Iterable[str] | None = None, prefix: str = "peft") -> Any:
    """peft's config of ``peft_type`` from ``fields``, checked; errors name one of ``given`` (default: every field).

    ``given`` are the fields the user wrote, as opposed to those the runner filled in: when
    peft's own checks fail, the blame goes to a field the user can change.
    """
    cls = peft_types()[peft_type]
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "peft_type"} - set(RESERVED)
    hints = _hints(cls)
    values = {}
    for name, value in fields.items():
        if name not in known:
            why = "set by peft or the runner, not by a run config" if name in RESERVED else "not a field"
            raise invalid(f"{prefix}.{name}", value, f"{why} of peft's {cls.__name__}, whose fields are "
                                                     f"{', '.join(sorted(known))}")
        values[name] = _checked(f"{prefix}.{name}", value, hints.get(name, Any), name in NUMBER_FIELDS)
    try:
        return cls(**values)
    except Exception as exc:  # __post_init__ raises ValueError, TypeError, ImportError, …: all one line
        raise _blame(cls, values, list(values if given is None else given), exc, prefix) from None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation peft cannot resolve here: leave its fields to peft's own checks
        return {}


def _checked(field: str, value: Any, hint: Any, number: bool) -> Any:
    """``value`` if it fits ``hint`` (a nested peft config given as a mapping becomes that config), else an error."""
    if number and hint is int:
        hint = float
    nested = _dataclass_in(hint)
    if nested is not None and isinstance(value, dict):
        try:
            return nested(**value)
        except Exception as exc:
            raise invalid(field, value, f"peft's {nested.__name__}: {_first_line(exc)}") from None
    if not conforms(value, hint):
        raise invalid(field, value, f"must be {describe(hint)}")
    return value


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML gives it: lists for tuples, strings for enums) fits the annotation ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value == arg or _literal_prefix(value, arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, set, tuple, frozenset) or hint in (list, set, tuple, frozenset):
        return isinstance(value, (list, tuple)) and _items_conform(value, args)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(conforms(k, args[0]) and conforms(v, args[1])
                                                            for k, v in value.items()))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or any(value == member.value for member in hint)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not read: peft's own checks decide


def _items_conform(value: Any, args: tuple) -> bool:
    if not args:
        return True
    if (len(args) == 2 and args[1] is Ellipsis) or len(args) == 1:
        return all(conforms(item, args[0]) for item in value)
    return len(value) == len(args) and all(conforms(item, arg) for item, arg in zip(value, args))


def _literal_prefix(value: Any, arg: Any) -> bool:
    """peft writes a family of literals as one, e.g. ``'pissa_niter_[number of iters]'`` for ``pissa_niter_16``."""
    return isinstance(value, str) and isinstance(arg, str) and "[" in arg and value.startswith(arg.split("[")[0])


def _dataclass_in(hint: Any) -> type | None:
    """The peft config dataclass among the alternatives of ``hint`` (e.g. ``Optional[EvaConfig]``), if any."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def describe(hint: Any) -> str:
    """``hint`` as a reader writes it: ``int``, ``list[str] | str | None``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return "None" if hint is type(None) else hint.__name__
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)  # peft.tuners.lora.config.X -> X


def _blame(cls: type, values: dict[str, Any], given: list[str], exc: Exception, prefix: str) -> RunnerError:
    """One line naming the given field peft's error is about: the first one its message names, else the one whose
    removal makes the config valid, else the whole section."""
    message = f"peft's {cls.__name__}: {_first_line(exc)}"
    text, given = str(exc), [name for name in given if name in values]
    mentioned = sorted((m.start(), name) for name in given
                       if (m := re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text)))
    if mentioned:
        name = mentioned[0][1]
        return invalid(f"{prefix}.{name}", values[name], message)
    for name in given:
        try:
            cls(**{k: v for k, v in values.items() if k != name})
        except Exception:
            continue
        return invalid(f"{prefix}.{name}", values[name], message)
    return invalid(prefix, {k: values[k] for k in given}, message)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
