"""Adam's bias correction for young rank units, each row with its own age (used by `triadapt.fresh_units`).

A unit that joined after optimizer step b is, to Adam, a parameter of age s = t − b, while the
optimizer corrects its moments' bias with the step count t of the whole unit parameter. Right
after the step, `YoungRows.correct` recomputes those rows' update with s:

    p += lr·m · (1 / (c1(t)(√v/√c2(t) + ε)) − 1 / (c1(s)(√v/√c2(s) + ε))),
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
rows, and per width of unit row a few elementwise operations on the young rows of all matrices
concatenated and one ``torch._foreach_addcmul_`` that applies the result to each matrix's rows.
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
        index: dict[tuple[int | None, float], int] = {}  # distinct (birth, steps_done − t); birth None: age t
        by_width: dict[int, tuple[list[Tensor], list[Tensor], list[Tensor], list[int], list[int]]] = {}
        for (p, layer), (m, v), t in zip(pairs, moments, counts):
            offset = steps_done - t
            births = [b if b > 0 and min(max(steps_done - b, 1), t) < t else None for b in layer.births[:layer.rank]]
            runs = young_runs([b is not None for b in births])
            if runs and runs[-1][1] == layer.rank:  # pad the last run with reserved rows (see the module doc)
                lo = runs[-1][0]
                runs[-1] = (lo, min(layer.capacity, lo + -(-(layer.rank - lo) // ROW_CHUNK) * ROW_CHUNK))
                births += [None] * (runs[-1][1] - layer.rank)
            if not runs:
                continue
            p_views, m_views, v_views, sizes, rows = by_width.setdefault(p.shape[1], ([], [], [], [], []))
            for (p_rows, m_rows, v_rows), (lo, hi) in zip(views.of(p, m, v, runs), runs):
                p_views.append(p_rows)
                m_views.append(m_rows)
                v_views.append(v_rows)
                sizes.append(hi - lo)
                rows.extend(index.setdefault((birth, offset), len(index)) for birth in births[lo:hi])
        self.ages: list[tuple[int | None, float]] = list(index)
        m = moments[0][0]
        self.classes = [(p_views, m_views, v_views, sizes,
                         m.new_empty(sum(sizes), width), m.new_empty(sum(sizes), width))  # work space, kept
                        for width, (p_views, m_views, v_views, sizes, _) in by_width.items()]
        self.rows = torch.tensor([row for *_, rows in by_width.values() for row in rows], dtype=torch.long,
                                 device=m.device)
        self.buffer = torch.zeros(len(self.rows), 4, dtype=m.dtype, device=m.device)  # own a, b; applied a, b
        self.coefficients = [column.split([len(work) for *_, work, _ in self.classes])
                             for column in self.buffer.unbind(1)]  # per column, per width: (rows,)

    def correct(self, group: Mapping[str, Any], steps_done: int) -> None:
        """After a step, on the young rows: ``p += lr·m·(1/(c1(t)(…)) − 1/(c1(s)(√v/√c2(s)+ε)))``.

        Per width of unit row, the young rows' second moments of all matrices are concatenated, the factor
        in brackets computed for all of them together and applied to each matrix's rows with one
        ``torch._foreach_addcmul_``."""
        if not self.classes:
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
        own_a, own_b, applied_a, applied_b = self.coefficients
        for (p_views, m_views, v_views, sizes, root_v, own), *column in zip(self.classes, own_a, own_b, applied_a,
                                                                             applied_b):
            own_a_k, own_b_k, applied_a_k, applied_b_k = (c.unsqueeze(1) for c in column)  # (rows, 1)
            torch.cat(v_views, out=root_v).sqrt_()  # (rows, width)
            torch.addcmul(own_b_k, root_v, own_a_k, out=own).reciprocal_()  # 1 / (c1(s)(√v/√c2(s) + ε))
            change = torch.addcmul(applied_b_k, root_v, applied_a_k, out=root_v).reciprocal_().sub_(own)  # t's, − own
            torch._foreach_addcmul_(p_views, m_views, change.split(sizes), value=lr)  # undo t's update, apply s's


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
