"""A row against the baseline row: the difference of means with a 95 % CI and a p-value (scipy.stats).

Seeds both rows share are compared pairwise (a paired t-test, ``scipy.stats.ttest_rel``):
the same seed means the same data order and initial head, so the pairs cancel that noise.
With fewer than two shared seeds the rows are compared as independent samples (Welch's
t-test, ``ttest_ind(equal_var=False)``). With a single value on either side there is no
test: only the difference and ``n=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    diff: float  # mean(row) − mean(baseline); paired: the mean of the paired differences
    test: str  # "paired", "Welch" or "none"
    n: str  # pairs ("3"), or the two sample sizes ("3 vs 2")
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """``+1.20 [-0.40, +2.80] p=0.12 (paired, n=3)``; ``+1.20 (n=1)`` without a test."""
        diff = f"{self.diff * scale:+.{digits}f}"
        if self.test == "none":
            return f"{diff} (n={self.n})"
        ci = "" if self.ci_low is None else f" [{self.ci_low * scale:+.{digits}f}, {self.ci_high * scale:+.{digits}f}]"
        p = "p=n/a" if self.p_value is None else f"p={self.p_value:.3g}"
        return f"{diff}{ci} {p} ({self.test}, n={self.n})"


def difference(values: dict[int, float], baseline: dict[int, float], confidence: float = 0.95) -> Difference:
    """Compare the values of a row with the baseline's, both keyed by seed."""
    from scipy import stats

    shared = sorted(set(values) & set(baseline))
    if len(shared) >= 2:
        row, base = [values[s] for s in shared], [baseline[s] for s in shared]
        deltas = [a - b for a, b in zip(row, base)]
        mean = sum(deltas) / len(deltas)
        if max(deltas) - min(deltas) < 1e-12:  # no spread (up to rounding): the t statistic is undefined
            return Difference(mean, "paired", str(len(shared)), mean, mean, None)
        result = stats.ttest_rel(row, base)
        interval = result.confidence_interval(confidence)
        return Difference(mean, "paired", str(len(shared)), float(interval.low), float(interval.high),
                          float(result.pvalue))
    row, base = list(values.values()), list(baseline.values())
    diff = sum(row) / len(row) - sum(base) / len(base)
    if len(row) < 2 or len(base) < 2:
        return Difference(diff, "none", "1" if min(len(row), len(base)) == 1 else f"{len(row)} vs {len(base)}")
    result = stats.ttest_ind(row, base, equal_var=False)
    interval = result.confidence_interval(confidence)
    low, high, p = float(interval.low), float(interval.high), float(result.pvalue)
    if math.isnan(p):  # both samples without spread
        return Difference(diff, "Welch", f"{len(row)} vs {len(base)}", diff, diff, None)
    return Difference(diff, "Welch", f"{len(row)} vs {len(base)}", low, high, p)
