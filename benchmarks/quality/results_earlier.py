"""Runs whose stores are lost: what `triadapt compare` wrote of them (`earlier/*.csv`, committed) is all that is left.

Those files hold each row's mean, sample std and median over its seeds, and its difference to each baseline row
with CI and p. With three seeds that is enough to give back the three values (not which seed had which): the median
is one, and the mean and std fix the other two. Nothing else of those runs (their learning-rate scores, ranks,
capacity hits) can be regenerated, so docs/results.md no longer quotes it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

from results_store import HERE, MINUS, markdown, p_text

EARLIER = HERE / "earlier"


@dataclass(frozen=True)
class Row:
    mean: float
    std: float
    median: float
    n: int
    diffs: dict[str, tuple[float, float, float, float]]  # baseline -> (diff, ci low, ci high, p)

    def three(self) -> list[float]:
        """The three values, ascending: a + c = 3·mean − median, (a − mean)² + (c − mean)² = 2·std² − (median −
        mean)²."""
        if self.n != 3:
            raise ValueError(f"n={self.n}: only three values can be given back")
        half = (3 * self.mean - self.median) / 2
        u = half - self.mean
        spread = (2 * self.std ** 2 - (self.median - self.mean) ** 2 - 2 * u ** 2) / 2
        d = math.sqrt(max(spread, 0.0))
        return [half - d, self.median, half + d]


def rows(name: str, task: str) -> dict[str, Row]:
    """The rows of ``earlier/<name>.csv`` on ``task``, by method."""
    out: dict[str, Row] = {}
    with open(EARLIER / f"{name}.csv", newline="") as handle:
        for line in csv.DictReader(handle):
            if line["task"] != task:
                continue
            row = out.setdefault(line["method"], Row(float(line["mean"]), float(line["std"]), float(line["median"]),
                                                     int(line["n"]), {}))
            if line.get("diff"):
                row.diffs[line["baseline"]] = (float(line["diff"]), float(line["ci_low"]), float(line["ci_high"]),
                                               float(line["p_value"]))
    if not out:
        raise SystemExit(f"{EARLIER / name}.csv has no rows on task {task}")
    return out


def number(value: float, scale: float, digits: int, sign: bool = False) -> str:
    return f"{value * scale:{'+' if sign else ''}.{digits}f}".replace("-", MINUS)


def versus(row: Row, baseline: str, scale: float, digits: int) -> str:
    if baseline not in row.diffs:
        return "baseline"
    diff, low, high, p = row.diffs[baseline]
    return (f"{number(diff, scale, digits, True)} [{number(low, scale, digits, True)}, "
            f"{number(high, scale, digits, True)}], {p_text(p)}")


def table(name: str, task: str, methods: dict[str, str], baselines: list[str], scale: float = 100.0,
          digits: int = 2, seed_digits: int = 1) -> str:
    """The rows ``methods`` (key: the row in the file, value: its label here): mean ± std, the three values
    (ascending) and the difference to each baseline row."""
    data = rows(name, task)
    head = ["method", "mean ± std (n = 3)", "the three seeds' values, ascending"]
    head += [f"Δ vs {b} [95 % CI], p" for b in baselines]
    body = []
    for method, label in methods.items():
        row = data[method]
        body.append([label, f"{number(row.mean, scale, digits)} ± {number(row.std, scale, digits)}",
                     ", ".join(number(v, scale, seed_digits) for v in row.three())]
                    + [versus(row, b, scale, digits) for b in baselines])
    return markdown(head, body)
