"""What the launcher says about this process (environment only: nothing heavy is imported here)."""

from __future__ import annotations

import os

from triadapt_runner.errors import RunnerError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_launch_environment() -> None:
    """Fail fast on launcher settings the runner does not support, saying what to use instead."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise RunnerError("FSDP is not supported: it flattens parameters and cannot leave inactive rank units "
                          "out of the forward; use DeepSpeed ZeRO-3 instead (--set train.zero_stage=3)")
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "fp16":
        raise RunnerError("ACCELERATE_MIXED_PRECISION='fp16' is not supported: use bf16 (train.mixed_precision=bf16)")


def ensure_offline_defaults() -> None:
    """The built-in model needs no network: avoid hub look-ups that stall before failing; no download bars."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # artifact downloads of the figures
