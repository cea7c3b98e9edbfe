"""The plugin registry: a pluggy manager, entry-point discovery and the strategy tables.

Built-ins are registered through the same hooks as third-party plugins. Each entry point
of the group ``triadapt`` is loaded behind its own error barrier: a failing plugin is
recorded (name, distribution, error) and skipped, or raises under ``strict``. A strategy
name offered twice is an error naming both distributions.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from triadapt.errors import PluginError, UnknownStrategyError
from triadapt.plugins import builtins, hookspecs
from triadapt.plugins.specs import ScorerSpec, StructureSpec, ThresholdSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "triadapt"
KINDS: dict[str, type] = {"structure": StructureSpec, "scorer": ScorerSpec, "threshold": ThresholdSpec}
STRICT_ENV = "TRIADAPT_STRICT_PLUGINS"


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
        self.register(builtins, name="triadapt.builtins", distribution="triadapt", version=_version("triadapt"))
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
            self._tables = {kind: self._collect(kind) for kind in KINDS}
        return self._tables

    def _collect(self, kind: str) -> dict[str, Any]:
        table: dict[str, Any] = {}
        owner: dict[str, str] = {}
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

    def create(self, kind: str, name: str, config: Any) -> Any:
        """Instantiate the strategy ``name`` of ``kind`` for ``config``."""
        return self.get(kind, name).factory(config)

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


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


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

