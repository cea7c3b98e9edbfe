import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["triadapt.testing"]


@pytest.fixture(autouse=True)
def _registry_with_entry_points(triadapt_registry):
    """Strategies are found through the installed entry point, as a user's would be."""
    yield triadapt_registry
