import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["triadapt.testing"]


@pytest.fixture(autouse=True)
def _fresh_registry(bare_registry):
    """Every test runs against its own registry (built-ins only unless it asks for more)."""
    yield bare_registry
