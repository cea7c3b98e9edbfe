"""Names moved to lower modules (to keep the core free of import circles) stay importable where they were."""

import importlib

import pytest

import triadapt

MOVED = {  # where users import them from -> the names
    "triadapt.allocator": ["Allocator", "GrowthEvent"],
    "triadapt.persistence": ["CONFIG_FILE", "FORMAT_VERSION", "STATE_FILE", "WEIGHTS_FILE", "adapter_tensors",
                             "load_adapter", "load_state", "read_adapter_meta", "read_tensors", "save_adapter",
                             "save_state"],
    "triadapt.plugins": ["ENTRY_POINT_GROUP", "PluginInfo", "Registry", "ScorerSpec", "StructureSpec", "ThresholdSpec",
                         "hookimpl", "hookspec", "registry", "strategy_options", "use_registry"],
}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_moved_names_are_importable_where_they_were(module):
    loaded = importlib.import_module(module)
    missing = [name for name in MOVED[module] if not hasattr(loaded, name)]
    assert not missing


def test_every_top_level_name_resolves():
    assert all(getattr(triadapt, name) is not None for name in triadapt.__all__)
    assert triadapt.GrowthEvent is importlib.import_module("triadapt.events").GrowthEvent
    assert triadapt.__version__ == importlib.import_module("triadapt.version").__version__
