import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

pytest_plugins = ["triadapt.testing"]


@pytest.fixture(autouse=True)
def _fresh_registry(bare_registry):
    """Every test runs against its own registry (built-ins only unless it asks for more)."""
    yield bare_registry


@pytest.fixture
def float64():
    """float64 as the default dtype for the test (semantics, not float32 rounding), restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
