"""The method registry: plugin methods by name, their providers, clashes and broken plugins, the 0.1 names."""

import pytest

from triadapt.plugins import hookimpl
from triadapt_runner.errors import RunnerError
from triadapt_runner.methods import MethodRegistry, methods, use_methods
from triadapt_runner.methods.peers import FullFineTune


class Renamed(FullFineTune):
    name = "every-weight"


class Clash:
    @hookimpl
    def triadapt_methods(self):
        return [Renamed(), FullFineTune()]  # full-finetune is the runner's own


class Broken:
    @hookimpl
    def triadapt_methods(self):
        raise ValueError("cannot build my method")


def test_a_plugin_method_registers_with_its_provider_and_a_clash_is_its_error():
    registry = MethodRegistry(entry_points=False)
    registry.register(Clash(), name="clash", distribution="clash-dist", version="1.2")
    assert "every-weight" in registry.names() and registry.provider("every-weight") == ("clash-dist", "1.2")
    assert registry.provider("full-finetune")[0] == "triadapt-runner"  # the built-in kept its name
    info = {p.name: p for p in registry.plugins()}["clash"]
    assert info.methods == ["every-weight"]
    assert "offers approach 'full-finetune', already provided by 'triadapt-runner.builtins'" in info.error


def test_a_broken_plugin_is_listed_and_skipped_or_fatal_under_strict():
    registry = MethodRegistry(entry_points=False)
    registry.register(Broken(), name="broken", distribution="broken-dist")
    assert registry.names()[:2] == ["triadapt", "increlora-style"]  # built-ins first, still there
    assert "hook triadapt_methods failed: ValueError: cannot build my method" in registry.plugins()[-1].error
    strict = MethodRegistry(entry_points=False, strict=True)
    strict.register(Broken(), name="broken", distribution="broken-dist")
    with pytest.raises(RunnerError, match=r"method plugin 'broken' from distribution 'broken-dist' hook "):
        strict.names()


def test_an_unknown_approach_lists_the_valid_ones():
    with pytest.raises(RunnerError, match=r"approach='lora' is invalid: use one of triadapt, increlora-style, "):
        methods().get("lora")


def test_use_methods_installs_a_registry_for_the_process():
    mine = MethodRegistry(entry_points=False)
    mine.register(Clash(), name="clash")
    old = use_methods(mine)
    try:
        assert methods() is mine and "every-weight" in methods().names()
    finally:
        use_methods(old)
    assert methods() is not mine


def test_the_0_1_approaches_dict_still_answers_with_a_deprecation_warning():
    import triadapt_runner.methods as module

    with pytest.warns(DeprecationWarning, match=r"APPROACHES is deprecated .*methods\(\).get\(name\)"):
        approaches = module.APPROACHES
    assert approaches["peft-lora"] is methods().get("peft-lora")
