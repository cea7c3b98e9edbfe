"""Differences to a baseline row: paired t-test on shared seeds, Welch otherwise, none with n = 1 (hand values)."""

import pytest

from triadapt_runner.tracking.significance import difference

ROW = {0: 0.70, 1: 0.72, 2: 0.71}
BASE = {0: 0.69, 1: 0.70, 2: 0.705}


def test_paired_by_hand():
    # deltas 0.010, 0.020, 0.005: mean 0.011667, sd 0.0076376, se 0.0044096, t = 2.6458 with 2 df;
    # t(0.975, 2) = 4.302653 (tables): CI = 0.011667 ± 0.018973; two-sided p = 0.1181
    d = difference(ROW, BASE)
    assert (d.test, d.n) == ("paired", "3")
    assert d.diff == pytest.approx(0.0116667, abs=1e-6)
    assert (d.ci_low, d.ci_high) == (pytest.approx(-0.007306, abs=2e-6), pytest.approx(0.030640, abs=2e-6))
    assert d.p_value == pytest.approx(0.1181, abs=5e-4)
    assert d.text() == "+1.17 [-0.73, +3.06] p=0.118 (paired, n=3)"


def test_welch_when_seeds_differ_by_hand():
    # means 0.71 and 0.698333; variances 1e-4 and 0.0000583; se = sqrt(1e-4/3 + 5.833e-5/3) = 0.0072648;
    # Welch-Satterthwaite df = 3.741; t = 0.0116667 / 0.0072648 = 1.6059; two-sided p = 0.1885
    shifted = {seed + 10: value for seed, value in BASE.items()}
    d = difference(ROW, shifted)
    assert (d.test, d.n) == ("Welch", "3 vs 3")
    assert d.diff == pytest.approx(0.0116667, abs=1e-6)
    assert d.p_value == pytest.approx(0.1885, abs=5e-4)
    from scipy.stats import t

    half = t.ppf(0.975, 3.7409) * 0.0072648
    assert (d.ci_low, d.ci_high) == (pytest.approx(0.0116667 - half, abs=1e-5), pytest.approx(0.0116667 + half, abs=1e-5))


def test_no_test_with_a_single_value():
    d = difference({0: 0.75}, BASE)
    assert (d.test, d.p_value, d.ci_low) == ("none", None, None)
    assert d.text() == "+5.17 (n=1)"  # 0.75 − mean(0.69, 0.70, 0.705) = 0.051667


def test_identical_differences_have_no_p_value():
    d = difference({0: 0.8, 1: 0.9}, {0: 0.7, 1: 0.8})
    assert d.diff == pytest.approx(0.1) and d.p_value is None and "p=n/a" in d.text()
