"""Task metrics against hand-computed values."""

import math

import pytest

from triadapt_runner.tasks.metrics import compute


def test_classification_metrics_by_hand():
    preds, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    # TP=2 FP=1 TN=2 FN=1: acc 4/6, F1 = 2·2/(2·2+1+1) = 2/3, MCC = (2·2−1·1)/sqrt(3·3·3·3) = 1/3
    out = compute(["accuracy", "f1", "matthews"], preds, gold)
    assert out == pytest.approx({"accuracy": 4 / 6, "f1": 2 / 3, "matthews": 1 / 3})


def test_macro_f1_three_classes():
    # class 0: P=1 R=1/2 F=2/3; class 1: P=1/2 R=1 F=2/3; class 2: P=R=F=1
    out = compute(["macro_f1"], [0, 1, 1, 2], [0, 0, 1, 2])
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_regression_metrics_by_hand():
    preds, gold = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    # deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5): r = 4 / sqrt(5·5) = 0.8; ranks equal values: rho = 0.8
    out = compute(["pearson", "spearman"], preds, gold)
    assert out["pearson"] == pytest.approx(0.8) and out["spearman"] == pytest.approx(0.8)


def test_constant_predictions_give_zero_correlation_not_nan():
    out = compute(["pearson"], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert out["pearson"] == 0.0 and not math.isnan(out["pearson"])


def test_unknown_metric():
    with pytest.raises(ValueError, match="metric='bleu' is unknown"):
        compute(["bleu"], [1], [1])
