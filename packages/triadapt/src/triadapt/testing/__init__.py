"""Test kit for plugin authors: pytest fixtures and conformance suites.

In a plugin's ``conftest.py``::

    pytest_plugins = ["triadapt.testing"]

Fixtures: ``triadapt_registry`` (a fresh registry with entry points, installed as the
process-wide one for the test), ``bare_registry`` (built-ins only) and ``register_plugin``
(register an inline ``@hookimpl`` object on the current registry). Conformance suites live
in :mod:`triadapt.testing.conformance`.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from triadapt.plugins.registry import Registry, use_registry


def _installed(registry: Registry) -> Iterator[Registry]:
    old = use_registry(registry)
    try:
        yield registry
    finally:
        use_registry(old)


@pytest.fixture
def triadapt_registry() -> Iterator[Registry]:
    """A fresh registry with the built-ins and every installed entry-point plugin."""
    yield from _installed(Registry(entry_points=True))


@pytest.fixture
def bare_registry() -> Iterator[Registry]:
    """A fresh registry with the built-ins only (no entry points)."""
    yield from _installed(Registry(entry_points=False))


@pytest.fixture
def register_plugin(bare_registry: Registry) -> Callable[..., str]:
    """``register_plugin(obj, name=None)`` registers an inline plugin on a fresh registry."""

    def register(plugin: object, name: str | None = None) -> str:
        return bare_registry.register(plugin, name=name)

    return register
