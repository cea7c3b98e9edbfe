"""triadapt-runner: train, track and compare TriAdaptLoRA runs (CLI ``triadapt``)."""

__version__ = "0.2.0"
