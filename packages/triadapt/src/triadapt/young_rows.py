"""Adam's bias correction for young rank units, each row with its own age (used by `triadapt.fresh_units`).

A unit that joined after optimizer step b is, to Adam, a parameter of age s = t − b, while the
optimizer corrects its moments' bias with the step count t of the whole unit parameter. Right
after the step, `YoungRows.correct` recomputes those rows' update with s:

    p += lr·m / (c1(t)(√v/√c2(t) + ε)) − lr·m / (c1(s)(√v/√c2(s) + ε)),
    c1(x) = 1 − β1^x, c2(x) = 1 − β2^x,

written ``c1(x)(√v/√c2(x) + ε) = a(x)·√v + b(x)``. Only views of the young rows are touched,
so every other active row stays exactly as the optimizer wrote it. A matrix's last young run
is padded with reserved rows (rank and beyond) to a multiple of ``ROW_CHUNK`` rows, so that its
views change at one growth in ``ROW_CHUNK`` instead of at every event (building views costs
operations at the step after an event; padding costs arithmetic on every step). The padded
rows ride along with s = t: their gradient is zero, so their first moment m is zero and the
correction adds and subtracts exactly zero (with Adam's L2 term m may not be zero there;
whatever it does to a waiting row is undone when the row joins, `triadapt.fresh_units`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

ROW_CHUNK = 4  # a young run's views cover a multiple of this many rows (see above)
Entry = tuple[Tensor, Tensor, Tensor, list[tuple[int, int]]]  # parameter, first moment, second moment, young runs


def young_runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """The [lo, hi) ranges of consecutive true flags (young units are usually one run: the last grown)."""
    runs, lo = [], None
    for index, flag in enumerate([*flags, False]):
        if flag and lo is None:
            lo = index
        elif not flag and lo is not None:
            runs.append((lo, index))
            lo = None
    return runs


class YoungRows:
    """The young rows of the unit parameters of one param group, and their per-step correction.

    Built when the arrangement of young rows changes (a growth event or new optimizer state
    tensors, see `key_of`) and reused every step: views of the young rows of each parameter and of
    its two moments (a parameter's views are kept across rebuilds while its own runs stay the
    same: `RowViews`), and one coefficient buffer whose per-run parts are refilled each step in
    one copy.
    """

    def __init__(self, entries: Sequence[Entry], views: "RowViews"):
        self.key = self.key_of(entries)
        self.p: list[Tensor] = []
        self.m: list[Tensor] = []
        self.v: list[Tensor] = []
        sizes: list[int] = []
        for p, m, v, runs in entries:
            for (p_rows, m_rows, v_rows), (lo, hi) in zip(views.of(p, m, v, runs), runs):
                self.p.append(p_rows)
                self.m.append(m_rows)
                self.v.append(v_rows)
                sizes.append(hi - lo)
        total = sum(sizes)
        self.buffer = torch.zeros(4 * total, dtype=entries[0][1].dtype, device=entries[0][1].device)
        self.own_a, self.own_b, self.applied_a, self.applied_b = (
            list(part.split(sizes)) for part in self.buffer.view(4, total, 1).unbind(0))  # (rows, 1) each

    @staticmethod
    def key_of(entries: Sequence[Entry]) -> tuple:
        """Views keep their storage alive, so equal data pointers and runs mean the cached views are valid."""
        return tuple((p.data_ptr(), m.data_ptr(), v.data_ptr(), tuple(runs)) for p, m, v, runs in entries)

    def correct(self, group: Mapping[str, Any], ages: Sequence[tuple[Sequence[float], float]]) -> None:
        """``ages``: per run (in construction order), its rows' own ages and the parameter's count t."""
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])
        memo: dict[float, tuple[float, float]] = {}

        def coefficients(age: float) -> tuple[float, float]:
            if age not in memo:
                c1 = 1.0 - beta1 ** age
                memo[age] = (c1 / math.sqrt(1.0 - beta2 ** age), c1 * eps)
            return memo[age]

        own_a, own_b, applied_a, applied_b = [], [], [], []
        for row_ages, t in ages:
            for age in row_ages:
                a, b = coefficients(age)
                own_a.append(a)
                own_b.append(b)
            a, b = coefficients(t)
            applied_a.extend([a] * len(row_ages))
            applied_b.extend([b] * len(row_ages))
        self.buffer.copy_(torch.tensor(own_a + own_b + applied_a + applied_b, dtype=self.buffer.dtype))
        root_v = torch._foreach_sqrt(self.v)
        own = torch._foreach_addcmul(self.own_b, root_v, self.own_a)  # c1(s)(√v/√c2(s) + ε)
        applied = torch._foreach_addcmul(self.applied_b, root_v, self.applied_a)  # c1(t)(√v/√c2(t) + ε)
        torch._foreach_addcdiv_(self.p, self.m, applied, value=lr)  # undo the update with t ...
        torch._foreach_addcdiv_(self.p, self.m, own, value=-lr)  # ... and apply the one with s


class RowViews:
    """Per parameter, the row views of it and its two moments over its young runs, kept while valid."""

    def __init__(self) -> None:
        self._views: dict[int, tuple[tuple, list[tuple[Tensor, Tensor, Tensor]]]] = {}

    def of(self, p: Tensor, m: Tensor, v: Tensor, runs: list[tuple[int, int]]) -> list[tuple[Tensor, Tensor, Tensor]]:
        key = (p.data_ptr(), m.data_ptr(), v.data_ptr(), tuple(runs))
        cached = self._views.get(id(p))
        if cached is None or cached[0] != key:
            cached = (key, [(p.narrow(0, lo, hi - lo), m.narrow(0, lo, hi - lo), v.narrow(0, lo, hi - lo))
                            for lo, hi in runs])
            self._views[id(p)] = cached
        return cached[1]
