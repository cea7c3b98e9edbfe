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

The arrangement (which rows, their views, which age each row has) is built when it changes (a
growth event, new optimizer state tensors) and reused: per step there is a signature check, one
small table of coefficients per distinct birth, one ``index_select`` that spreads it over the
rows, and five ``torch._foreach_*`` passes for all matrices together.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

ROW_CHUNK = 4  # a young run's views cover a multiple of this many rows (see above)
Pair = tuple[Tensor, Any]  # a unit parameter and its AdapterLayer


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


def signature(pairs: Sequence[Pair], moments: Sequence[tuple[Tensor, Tensor]], counts: Sequence[float],
              steps_done: int) -> tuple:
    """What the arrangement of young rows depends on. Views keep their storage alive, so equal data
    pointers mean the same tensors; a birth at or after ``steps_done`` (a unit grown "in the future")
    makes the arrangement depend on the step itself."""
    return tuple((tuple(layer.births[:layer.rank]), layer.capacity, p.data_ptr(), m.data_ptr(), v.data_ptr(),
                  steps_done - t, t > 1, steps_done if max(layer.births, default=0) >= steps_done else None)
                 for (p, layer), (m, v), t in zip(pairs, moments, counts))


class YoungRows:
    """The young rows of the unit parameters of one param group, and their per-step correction."""

    def __init__(self, key: tuple, pairs: Sequence[Pair], moments: Sequence[tuple[Tensor, Tensor]],
                 counts: Sequence[float], steps_done: int, views: "RowViews"):
        self.key = key
        self.p: list[Tensor] = []
        self.m: list[Tensor] = []
        self.v: list[Tensor] = []
        index: dict[tuple[int | None, float], int] = {}  # distinct (birth, steps_done − t); birth None: age t
        rows: list[int] = []  # per row: its entry in self.ages
        sizes: list[int] = []
        for (p, layer), (m, v), t in zip(pairs, moments, counts):
            offset = steps_done - t
            births = [b if b > 0 and min(max(steps_done - b, 1), t) < t else None for b in layer.births[:layer.rank]]
            runs = young_runs([b is not None for b in births])
            if runs and runs[-1][1] == layer.rank:  # pad the last run with reserved rows (see the module doc)
                lo = runs[-1][0]
                runs[-1] = (lo, min(layer.capacity, lo + -(-(layer.rank - lo) // ROW_CHUNK) * ROW_CHUNK))
                births += [None] * (runs[-1][1] - layer.rank)
            for (p_rows, m_rows, v_rows), (lo, hi) in zip(views.of(p, m, v, runs), runs):
                self.p.append(p_rows)
                self.m.append(m_rows)
                self.v.append(v_rows)
                sizes.append(hi - lo)
                rows.extend(index.setdefault((birth, offset), len(index)) for birth in births[lo:hi])
        self.ages: list[tuple[int | None, float]] = list(index)
        m = moments[0][0]
        self.rows = torch.tensor(rows, dtype=torch.long, device=m.device)
        self.buffer = torch.zeros(len(rows), 4, dtype=m.dtype, device=m.device)  # own a, b; applied a, b
        self.own_a, self.own_b, self.applied_a, self.applied_b = (
            list(self.buffer.narrow(1, column, 1).split(sizes)) for column in range(4))  # (rows, 1) each

    def correct(self, group: Mapping[str, Any], steps_done: int) -> None:
        """``p += lr·m/(c1(t)(√v/√c2(t)+ε)) − lr·m/(c1(s)(√v/√c2(s)+ε))`` on the young rows (after a step)."""
        if not self.p:
            return
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])

        def coefficients(age: float) -> list[float]:
            c1 = 1.0 - beta1 ** age
            return [c1 / math.sqrt(1.0 - beta2 ** age), c1 * eps]

        table = []
        for birth, offset in self.ages:
            t = steps_done - offset
            age = t if birth is None else min(max(steps_done - birth, 1), t)
            table.append(coefficients(age) + coefficients(t))
        coefficient_table = torch.tensor(table, dtype=self.buffer.dtype)
        torch.index_select(coefficient_table.to(self.buffer.device, non_blocking=True), 0, self.rows, out=self.buffer)
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
