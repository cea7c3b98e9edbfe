"""The method registry: every ``approach`` a run can name, built-in or from a plugin, and who provided it.

Built-ins register through the ``triadapt_methods`` hook like any plugin. Each entry point of the
group ``triadapt.methods`` is loaded behind its own error barrier: a failing plugin is recorded
(name, distribution, error) and skipped, or raises under ``TRIADAPT_STRICT_PLUGINS=1`` (or
``strict``). A name offered twice stays with the first plugin (built-ins first); the second one's
entry in `triadapt plugins` names the clash and both distributions.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

import triadapt.plugins.hookspecs as strategy_hookspecs
import triadapt_runner.methods.builtins as builtins
import triadapt_runner.methods.hookspecs as hookspecs
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.methods.base import Method

log = logging.getLogger(__name__)
STRICT_ENV = "TRIADAPT_STRICT_PLUGINS"


@dataclass
class MethodPlugin:
    """One registered (or failed) method plugin, as `triadapt plugins` lists it."""

    name: str
    distribution: str
    version: str
    methods: list[str] = field(default_factory=list)
    error: str | None = None


class MethodRegistry:
    """Methods by name, gathered from the built-ins and every installed method plugin."""

    def __init__(self, *, entry_points: bool = True, strict: bool | None = None):
        self.strict = os.environ.get(STRICT_ENV, "") not in ("", "0") if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.pm.add_hookspecs(strategy_hookspecs)  # a module may implement strategy hooks beside its methods
        self.infos: dict[str, MethodPlugin] = {}
        self._table: dict[str, tuple[Method, str]] | None = None
        self.register(builtins, name="triadapt-runner.builtins", distribution="triadapt-runner",
                      version=_version("triadapt-runner"))
        if entry_points:
            for ep in md.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else "<unknown>"
                version = ep.dist.version if ep.dist is not None else ""
                try:
                    self.register(ep.load(), name=ep.name, distribution=dist, version=version)
                except Exception as exc:  # the error barrier: one broken plugin must not take the runner down
                    self._fail(MethodPlugin(ep.name, dist, version), f"failed to load: {type(exc).__name__}: {exc}")

    def register(self, plugin: object, *, name: str, distribution: str = "<inline>", version: str = "") -> None:
        """Register a plugin object (module, class or instance with a ``triadapt_methods`` hookimpl)."""
        if self.pm.has_plugin(name):
            raise RunnerError(f"method plugin {name!r} is already registered")
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()  # a misspelt hook name fails here
        except Exception:
            self.pm.unregister(name=name)
            raise
        self.infos[name] = MethodPlugin(name, distribution, version)
        self._table = None

    def _fail(self, info: MethodPlugin, message: str) -> None:
        info.error = message
        self.infos[info.name] = info
        if self.strict:
            raise RunnerError(f"method plugin {info.name!r} from distribution {info.distribution!r} {message}")
        log.warning("triadapt method plugin %r (%s) %s; skipped", info.name, info.distribution, message)

    def table(self) -> dict[str, tuple[Method, str]]:
        """Method name -> (the method, the name of the plugin that provided it)."""
        if self._table is None:
            table: dict[str, tuple[Method, str]] = {}
            for impl in self.pm.hook.triadapt_methods.get_hookimpls():
                info = self.infos[impl.plugin_name]
                try:
                    methods = list(impl.function())
                    _check(methods)
                except Exception as exc:
                    self._fail(info, f"hook triadapt_methods failed: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                for method in methods:
                    if method.name in table:  # the first keeps it; the clash is this plugin's error (listed)
                        other = self.infos[table[method.name][1]]
                        self._fail(info, f"offers approach {method.name!r}, already provided by {other.name!r} "
                                         f"(distribution {other.distribution!r}); uninstall or rename one")
                        continue
                    table[method.name] = (method, impl.plugin_name)
                    info.methods.append(method.name)
            self._table = dict(sorted(table.items(), key=lambda item: _builtin_first(self, item)))
        return self._table

    def names(self) -> list[str]:
        return list(self.table())

    def get(self, name: str) -> Method:
        """The method called ``name``; an unknown name is a one-line error listing the valid ones."""
        table = self.table()
        if name not in table:
            raise invalid("approach", name, f"use one of {', '.join(table)} (method plugins: `triadapt plugins`)")
        return table[name][0]

    def provider(self, name: str) -> tuple[str, str]:
        """(distribution, version) of the package that provided method ``name``."""
        self.get(name)
        info = self.infos[self.table()[name][1]]
        return info.distribution, info.version

    def plugins(self) -> list[MethodPlugin]:
        self.table()
        return list(self.infos.values())


def _check(methods: list[Any]) -> None:
    for method in methods:
        if not isinstance(method, Method):
            raise TypeError(f"returned {type(method).__name__}, expected a triadapt_runner.methods.Method instance")
        if not isinstance(method.name, str) or not method.name:
            raise TypeError(f"returned a {type(method).__name__} with an empty name")
        if not isinstance(method.options, dict):
            raise TypeError(f"method {method.name!r} has options that are not a dict of defaults")


def _builtin_first(registry: MethodRegistry, item: tuple[str, tuple[Method, str]]) -> tuple[int, int]:
    """Built-ins first in their own order, then plugins' methods in registration order."""
    plugin = item[1][1]
    return (0 if plugin == "triadapt-runner.builtins" else 1), list(registry.infos).index(plugin)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


_current: MethodRegistry | None = None


def methods() -> MethodRegistry:
    """The process-wide method registry (built on first use, with entry points)."""
    global _current
    if _current is None:
        _current = MethodRegistry()
    return _current


def use_methods(new: MethodRegistry | None) -> MethodRegistry | None:
    """Install ``new`` as the process-wide method registry (None: rebuild on next use); returns the old one."""
    global _current
    old, _current = _current, new
    return old


def method_for(cfg: Any) -> Method:
    """The method a run config names (``approach``)."""
    return methods().get(cfg.approach)
