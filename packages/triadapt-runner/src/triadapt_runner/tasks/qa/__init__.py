"""Extractive question answering (SQuAD 1.1 / 2.0): data, features, post-processing, metrics."""
