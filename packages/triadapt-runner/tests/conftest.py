import os
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402

pytest_plugins = ["triadapt.testing"]

TINY = {"data": {"max_train_samples": 48, "max_eval_samples": 32, "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "learning_rate": 2e-3, "log_every": 1},
        "adapter": {"ref_rank": 2, "max_rank": 4}}


@pytest.fixture(autouse=True)
def _fresh_registry(bare_registry):
    yield bare_registry


@pytest.fixture
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args, cwd=None, timeout=600):
    """Run `triadapt` in a subprocess (a real CLI invocation); returns the CompletedProcess."""
    cmd = [sys.executable, "-m", "triadapt_runner.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def write_yaml(path: Path, data) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
