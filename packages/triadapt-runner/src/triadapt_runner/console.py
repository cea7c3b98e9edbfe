"""Quieter third-party libraries for the training commands (their progress bars, warnings and loggers)."""

from __future__ import annotations


def quiet_optional_kernels() -> None:
    """Every command: bitsandbytes' import (through peft) warns that an optional CPU kernel package is missing."""
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def quiet_without_imports() -> None:
    """Checks only: transformers and datasets read these when (and if) they are imported."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def quiet_mlflow() -> None:
    import logging

    import mlflow  # noqa: F401  (configures its loggers on import: quiet them afterwards)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def quiet_libraries() -> None:
    """Training commands: the progress bars and warnings of datasets, transformers and mlflow off."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    quiet_mlflow()
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
