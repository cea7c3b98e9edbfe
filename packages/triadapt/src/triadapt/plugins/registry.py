"""The plugin registry: a pluggy manager, entry-point discovery and the strategy tables.

Built-ins are registered through the same hooks as third-party plugins. Each entry point
of the group ``triadapt`` is loaded behind its own error barrier: a failing plugin is
recorded (name, distribution, error) and skipped, or raises under ``strict``. A strategy
name offered twice is an error naming both distributions.

Building a strategy (``create``) checks its options against the spec's options dataclass
(`triadapt.plugins.options`) and turns a plain ``ValueError`` of the plugin's code into a
one-line `StrategyConfigError` naming the plugin and its distribution (the original stays the
``__cause__``): the user sees which package refused what, not a traceback into it.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import pluggy

import triadapt.plugins.builtins as builtins
import triadapt.plugins.hookspecs as hookspecs
from triadapt.errors import PluginError, StrategyConfigError, TriAdaptError, UnknownStrategyError
from triadapt.plugins.options import Owner, build_options, is_options_class, one_line
from triadapt.plugins.specs import ScorerSpec, StructureSpec, ThresholdSpec
from triadapt.version import __version__

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "triadapt"
KINDS: dict[str, type] = {"structure": StructureSpec, "scorer": ScorerSpec, "threshold": ThresholdSpec}
STRICT_ENV = "TRIADAPT_STRICT_PLUGINS"
BUILTINS = "triadapt.builtins"  # the plugin name of the built-in strategies


@dataclass
class PluginInfo:
    """What `triadapt plugins` lists: one registered (or failed) plugin."""

    name: str
    distribution: str
    version: str
    strategies: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class Registry:
    """Strategies by kind and name, gathered from every registered plugin."""

    def __init__(self, *, entry_points: bool = True, strict: bool | None = None):
        self.strict = os.environ.get(STRICT_ENV, "") not in ("", "0") if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._tables: dict[str, dict[str, Any]] | None = None
        self._owners: dict[str, dict[str, str]] = {}  # kind -> strategy name -> the plugin that provides it
        self._warned: set[tuple[str, str]] = set()  # strategies already warned about for untyped options
        self.register(builtins, name=BUILTINS, distribution="triadapt", version=__version__)
        if entry_points:
            self.load_entry_points()
        self.pm.check_pending()

    # -- registration -----------------------------------------------------------------------------
    def register(self, plugin: object, *, name: str | None = None, distribution: str = "<inline>",
                 version: str = "") -> str:
        """Register a plugin object (module, class or instance with ``@hookimpl`` functions)."""
        if self.pm.is_registered(plugin) or (name is not None and self.pm.has_plugin(name)):
            raise PluginError(f"plugin {name or plugin!r} is already registered")
        plugin_name = self.pm.register(plugin, name=name)
        if plugin_name is None:
            raise PluginError(f"plugin {name or plugin!r} is already registered")
        try:
            self.pm.check_pending()  # a misspelt hook name, e.g. triadapt_scorer, fails here
        except Exception:
            self.pm.unregister(name=plugin_name)
            raise
        self.infos[plugin_name] = PluginInfo(plugin_name, distribution, version)
        self._tables = None
        return plugin_name

    def load_entry_points(self) -> None:
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            try:
                self.register(ep.load(), name=ep.name, distribution=dist, version=version)
            except Exception as exc:  # the error barrier: one broken plugin must not take the host down
                self._fail(PluginInfo(ep.name, dist, version), f"failed to load: {type(exc).__name__}: {exc}")

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self.infos[info.name] = info
        if self.strict:
            raise PluginError(f"plugin {info.name!r} from distribution {info.distribution!r} {message}")
        log.warning("triadapt plugin %r (%s) %s; skipped", info.name, info.distribution, message)

    # -- tables -----------------------------------------------------------------------------------
    def tables(self) -> dict[str, dict[str, Any]]:
        if self._tables is None:
            owners: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
            self._tables = {kind: self._collect(kind, owners[kind]) for kind in KINDS}
            self._owners = owners
        return self._tables

    def _collect(self, kind: str, owner: dict[str, str]) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for impl in getattr(self.pm.hook, f"triadapt_{kind}s").get_hookimpls():
            info = self.infos[impl.plugin_name]
            try:
                specs = list(impl.function())
                _check_specs(kind, specs)
            except Exception as exc:
                self._fail(info, f"hook triadapt_{kind}s failed: {type(exc).__name__}: {exc}")
                continue
            for spec in specs:
                if spec.name in table:
                    other = self.infos[owner[spec.name]]
                    raise PluginError(f"{kind} name {spec.name!r} is provided twice: by plugin {other.name!r} "
                                      f"(distribution {other.distribution!r}) and by plugin {info.name!r} "
                                      f"(distribution {info.distribution!r}); uninstall or rename one")
                table[spec.name], owner[spec.name] = spec, impl.plugin_name
                info.strategies.setdefault(kind, []).append(spec.name)
        return table

    def names(self, kind: str) -> list[str]:
        return sorted(self.tables()[kind])

    def get(self, kind: str, name: str) -> Any:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is invalid: use one of {', '.join(KINDS)}")
        table = self.tables()[kind]
        if name not in table:
            raise UnknownStrategyError(kind, name, list(table))
        return table[name]

    def provider(self, kind: str, name: str) -> tuple[str, str]:
        """(distribution, version) that provides the strategy ``name`` of ``kind``: ("triadapt", the core's
        version) for a built-in, ("<inline>", "") for a plugin registered from code without a distribution."""
        self.get(kind, name)
        info = self.infos[self._owners[kind][name]]
        return info.distribution, info.version

    def owner(self, kind: str, name: str) -> Owner:
        """The strategy as error messages name it: its kind and name, and for a plugin's the plugin and its
        distribution."""
        self.get(kind, name)
        info = self.infos[self._owners[kind][name]]
        if info.name == BUILTINS:
            return Owner(kind, name, "")
        version = f" {info.version}" if info.version else ""
        return Owner(kind, name, f"plugin {info.name!r} (distribution {info.distribution}{version})")

    def resolve_options(self, kind: str, name: str, given: Mapping[str, Any] | None) -> Any:
        """The options of strategy ``name`` of ``kind`` from ``given`` (``strategy_options[name]``): an instance of
        the spec's options dataclass, checked and with defaults filled (`StrategyOptionError` otherwise).

        A spec without an options dataclass (the 0.1 form) gets ``given`` back as a dict, unchecked; when options
        are given to it, a `DeprecationWarning` names the replacement.
        """
        spec = self.get(kind, name)
        if spec.options is not None:
            return build_options(spec.options, given, self.owner(kind, name))
        if given and (kind, name) not in self._warned:  # once: the config and the plan both resolve them
            self._warned.add((kind, name))
            warnings.warn(f"strategy_options[{name!r}] reach {self.owner(kind, name)} as an untyped dict; this is "
                          f"deprecated since 0.2 and goes in 0.3: its spec should declare an options dataclass "
                          f"({type(spec).__name__}(..., options=<dataclass>))", DeprecationWarning, stacklevel=3)
        return dict(given or {})

    def create(self, kind: str, name: str, config: Any) -> Any:
        """Instantiate the strategy ``name`` of ``kind`` for ``config``: ``factory(config, options)`` for a spec with
        an options dataclass, ``factory(config)`` for one without.

        A plain ``ValueError`` from the strategy's code becomes a `StrategyConfigError` naming the strategy, its
        plugin and distribution (the ``ValueError`` is its ``__cause__``); triadapt's own errors pass unchanged.
        """
        spec = self.get(kind, name)
        options = self.resolve_options(kind, name, (getattr(config, "strategy_options", None) or {}).get(name))
        try:
            return spec.factory(config, options) if spec.options is not None else spec.factory(config)
        except TriAdaptError:
            raise
        except ValueError as exc:
            owner = self.owner(kind, name)
            raise StrategyConfigError(kind, name, f"{owner} refused the configuration: {one_line(exc)}", kind=kind,
                                      strategy=name, provider=owner.provider) from exc

    def plugins(self) -> list[PluginInfo]:
        self.tables()
        return list(self.infos.values())

    # -- observers --------------------------------------------------------------------------------
    def notify_growth(self, event: Any, ranks: dict[str, int], context: dict[str, Any]) -> None:
        for impl in self.pm.hook.triadapt_growth_event.get_hookimpls():
            try:
                impl.function(event=event, ranks=ranks, context=context)
            except Exception as exc:
                self._fail(self.infos[impl.plugin_name], f"hook triadapt_growth_event failed: {exc}")


def _check_specs(kind: str, specs: list[Any]) -> None:
    expected = KINDS[kind]
    for spec in specs:
        if not isinstance(spec, expected):
            raise TypeError(f"returned {type(spec).__name__}, expected {expected.__name__}")
        if not isinstance(spec.name, str) or not spec.name:
            raise TypeError(f"returned a {expected.__name__} with an empty name")
        if not callable(spec.factory):
            raise TypeError(f"{expected.__name__} {spec.name!r} has a factory that is not callable")
        if spec.options is not None and not is_options_class(spec.options):
            raise TypeError(f"{expected.__name__} {spec.name!r} has options={spec.options!r}: options must be a "
                            f"dataclass (its fields are the options) or None")


_current: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (built on first use, with entry points)."""
    global _current
    if _current is None:
        _current = Registry()
    return _current


def use_registry(new: Registry | None) -> Registry | None:
    """Install ``new`` as the process-wide registry (None: rebuild on next use); returns the old one."""
    global _current
    old, _current = _current, new
    return old

