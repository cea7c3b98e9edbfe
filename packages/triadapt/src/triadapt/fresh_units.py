"""A grown rank unit starts fresh in the optimizer, although it shares its matrix's parameter.

Every rank unit of a matrix is a row of one parameter (`triadapt.unit_storage`), so a stock
optimizer steps all rows of a matrix together. Two things then differ from a unit that is
created as a new parameter when it joins (paper Eq. 6-9), and `UnitRefresher`, run right
after each optimizer step, puts both back exactly:

* **Reserved rows** (at or beyond the rank) get a zero gradient, but weight decay (AdamW), L2
  through the gradient (Adam, SGD) or momentum may still move them while they wait. When units
  join (`UnitRefresher.reset_joining`, at the growth event), their rows get their initial values
  back and every per-element state tensor of the optimizer (moments, momentum buffers) is zeroed
  on them, so a unit joins with its initial values and no history.
* **Young rows** (joined after optimizer step b > 0): Adam and AdamW correct the bias of their
  moments with the parameter's step count t, while a new parameter would use its own age
  s = t − b. For ``torch.optim.Adam`` and ``AdamW`` (for-loop, foreach and fused alike) the
  update of those rows is recomputed with s: ``p += lr·m/(c1(t)(√v/√c2(t)+ε)) −
  lr·m/(c1(s)(√v/√c2(s)+ε))``, c1(x) = 1 − β1^x, c2(x) = 1 − β2^x, on views of the young rows
  (`triadapt.young_rows`), so every active row that is not young stays exactly as the optimizer
  wrote it. Other optimizers that count steps get a one-time warning: their young units share
  the matrix's step count.

The per-step correction is five ``torch._foreach_*`` calls for all matrices together, on row
views built when a matrix first grows and reused from then on (one small tensor of per-row
coefficients is copied per step); the reset at an event works on whole parameters with per-row
masks. Optimizers that do not hold the unit parameters themselves (DeepSpeed ZeRO steps
flattened copies) are left alone: there, as before, units share the step count of the flat
group and reserved units are decayed with it.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor

from triadapt.errors import TriAdaptError
from triadapt.layer import AdapterLayer
from triadapt.young_rows import RowViews, YoungRows, signature

ADAM_FAMILY = (torch.optim.Adam, torch.optim.AdamW)


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer that does the work: wrappers (accelerate's ``AcceleratedOptimizer``, itself a
    ``torch.optim.Optimizer``, and DeepSpeed's) expose the wrapped one as ``.optimizer``."""
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer


class UnitRefresher:
    """Keeps grown units as fresh as new parameters in the optimizer; one per controller."""

    def __init__(self, layers: Mapping[str, AdapterLayer]):
        self.layers = dict(layers)
        self._last_step: dict[int, float] = {}  # id(param) -> optimizer step count at the last correction
        self._warned: set[type] = set()
        self._held_memo: tuple[Any, tuple, list] | None = None  # (optimizer, its param-group signature, groups)
        self._young: dict[tuple, YoungRows] = {}  # (id(param group), dtype, device) -> its young rows
        self._row_views = RowViews()

    def _held(self, optimizer: Any) -> tuple[Any, list[tuple[Mapping[str, Any], list[tuple[Tensor, AdapterLayer]]]]]:
        """The optimizer holding the unit parameters, and per param group the (parameter, layer) pairs it holds."""
        inner = unwrap_optimizer(optimizer)
        if not isinstance(inner, torch.optim.Optimizer):
            raise TriAdaptError(f"optimizer={type(optimizer).__name__} is invalid: pass the torch.optim.Optimizer "
                                f"that steps the model (or a wrapper exposing it as .optimizer), or nothing")
        optimizer = inner
        signature = tuple((id(group["params"]), len(group["params"])) for group in optimizer.param_groups)
        memo = self._held_memo
        if memo is not None and memo[0] is optimizer and memo[1] == signature:
            return optimizer, memo[2]
        by_param = {id(layer.units): layer for layer in self.layers.values()}
        groups = [(group, [(p, by_param[id(p)]) for p in group["params"] if id(p) in by_param])
                  for group in optimizer.param_groups]
        groups = [(group, pairs) for group, pairs in groups if pairs]
        self._held_memo = (optimizer, signature, groups)
        return optimizer, groups

    @torch.no_grad()
    def __call__(self, optimizer: Any, steps_done: int) -> None:
        """Young-unit bias correction; call once right after ``optimizer.step()`` (``steps_done`` counts it)."""
        optimizer, groups = self._held(optimizer)
        for group, pairs in groups:
            pairs = [(p, layer) for p, layer in pairs if any(layer.births[:layer.rank]) and p in optimizer.state]
            for kind_pairs in _by_kind(pairs).values():
                self._correct(optimizer, group, kind_pairs, steps_done)

    def _correct(self, optimizer: Any, group: Mapping[str, Any], pairs: list, steps_done: int) -> None:
        if not isinstance(optimizer, ADAM_FAMILY):
            if type(optimizer) not in self._warned and any("step" in optimizer.state[p] for p, _ in pairs):
                self._warned.add(type(optimizer))
                warnings.warn(f"{type(optimizer).__name__} counts steps per parameter: units grown during training "
                              f"share their matrix's step count (only torch.optim.Adam and AdamW get each unit's own "
                              f"bias correction)", stacklevel=4)
            return
        state = [optimizer.state[p] for p, _ in pairs]
        counts = _step_counts([s["step"] for s in state])
        if all(self._last_step.get(id(p)) == c for (p, _), c in zip(pairs, counts)):
            return  # the optimizer skipped this step (e.g. a gradient scaler found inf): nothing to undo
        self._last_step.update((id(p), c) for (p, _), c in zip(pairs, counts))
        second = "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"
        moments = [(s["exp_avg"], s[second]) for s in state]
        key = signature(pairs, moments, counts, steps_done)
        slot = (id(group), pairs[0][0].dtype, pairs[0][0].device)
        rows = self._young.get(slot)
        if rows is None or rows.key != key:
            rows = self._young[slot] = YoungRows(key, pairs, moments, counts, steps_done, self._row_views)
        rows.correct(group, steps_done)

    @torch.no_grad()
    def reset_joining(self, optimizer: Any, grown: Mapping[str, int]) -> None:
        """Units that just joined (``grown``: layer name -> units added): initial values, zero optimizer state.

        Without an optimizer only the values are reset; with one that does not hold the unit
        parameters (DeepSpeed ZeRO) nothing is, since the engine would overwrite the values.
        """
        joined = {id(self.layers[name].units): (self.layers[name], amount) for name, amount in grown.items()}
        state: Mapping[Any, Any] = {}
        if optimizer is not None:
            optimizer, groups = self._held(optimizer)
            held = {id(p) for _, group_pairs in groups for p, _ in group_pairs}
            joined = {key: value for key, value in joined.items() if key in held}
            state = optimizer.state if groups else {}
        pairs = [(layer.units, (layer, amount)) for layer, amount in joined.values()]
        for (dtype, device), kind_pairs in _by_kind(pairs).items():
            params = [p for p, _ in kind_pairs]
            rows = [[float(layer.rank - amount <= i < layer.rank) for i in range(layer.capacity)]
                    for _, (layer, amount) in kind_pairs]
            table = torch.tensor([[[[1.0 - x] for x in r] for r in rows], [[[x] for x in r] for r in rows]],
                                 dtype=dtype, device=device)  # (2, L, cap, 1): keep, join
            keep, join = (list(part.unbind(0)) for part in table.unbind(0))
            torch._foreach_mul_(params, keep)
            torch._foreach_addcmul_(params, [layer.reserve_full for _, (layer, _) in kind_pairs], join)
            moments = [(t, k) for p, k in zip(params, keep) for _, t in sorted(state.get(p, {}).items())
                       if torch.is_tensor(t) and t.shape == p.shape]
            if moments:
                torch._foreach_mul_([t for t, _ in moments], [k for _, k in moments])


def _by_kind(pairs: list) -> dict[tuple, list]:
    out: dict[tuple, list] = {}
    for p, layer in pairs:
        out.setdefault((p.dtype, p.device), []).append((p, layer))
    return out


def _step_counts(steps: list[Any]) -> list[float]:
    """The optimizer's step count per parameter, read in one transfer."""
    if all(torch.is_tensor(s) for s in steps) and len({(s.dtype, s.device) for s in steps}) == 1:
        return torch.stack(steps).tolist()
    return [float(s) for s in steps]
