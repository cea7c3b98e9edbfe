"""Task metrics from scikit-learn and scipy (never hand-written)."""

from __future__ import annotations

from typing import Sequence



def compute(metrics: Sequence[str], predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """Each named metric of predictions (class ids, or scores for regression) against labels."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    preds, gold = np.asarray(predictions), np.asarray(labels)
    out = {}
    for name in metrics:
        if name == "accuracy":
            out[name] = float(accuracy_score(gold, preds))
        elif name == "f1":
            out[name] = float(f1_score(gold, preds, average="binary", zero_division=0))
        elif name == "macro_f1":
            out[name] = float(f1_score(gold, preds, average="macro", zero_division=0))
        elif name == "matthews":
            out[name] = float(matthews_corrcoef(gold, preds))
        elif name == "pearson":
            out[name] = float(pearsonr(preds, gold).statistic) if len(set(preds.tolist())) > 1 else 0.0
        elif name == "spearman":
            out[name] = float(spearmanr(preds, gold).statistic) if len(set(preds.tolist())) > 1 else 0.0
        else:
            raise ValueError(f"metric={name!r} is unknown: use accuracy, f1, macro_f1, matthews, pearson, spearman")
    return out
