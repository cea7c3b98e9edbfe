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
  lr·m/(c1(s)(√v/√c2(s)+ε))``, c1(x) = 1 − β1^x, c2(x) = 1 − β2^x. Rows that are not young get
  the same expression twice, bitwise, so their correction is exactly zero. Other optimizers
  that count steps get a one-time warning: their young units share the matrix's step count.

Both work on whole parameters with per-row coefficients or masks: a handful of
``torch._foreach_*`` calls per step (and per event) for all matrices together, no tensor
built per matrix (only small Python lists of coefficients). Optimizers that do not hold the
unit parameters themselves (DeepSpeed ZeRO steps flattened copies) are left alone: there, as
before, units share the step count of the flat group and reserved units are decayed with it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import torch
from torch import Tensor

from triadapt.errors import TriAdaptError
from triadapt.layer import AdapterLayer

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

    def _held(self, optimizer: Any) -> tuple[Any, list[tuple[Mapping[str, Any], list[tuple[Tensor, AdapterLayer]]]]]:
        """The optimizer holding the unit parameters, and per param group the (parameter, layer) pairs it holds."""
        inner = unwrap_optimizer(optimizer)
        if not isinstance(inner, torch.optim.Optimizer):
            raise TriAdaptError(f"optimizer={type(optimizer).__name__} is invalid: pass the torch.optim.Optimizer "
                                f"that steps the model (or a wrapper exposing it as .optimizer), or nothing")
        optimizer = inner
        by_param = {id(layer.units): layer for layer in self.layers.values()}
        groups = [(group, [(p, by_param[id(p)]) for p in group["params"] if id(p) in by_param])
                  for group in optimizer.param_groups]
        return optimizer, [(group, pairs) for group, pairs in groups if pairs]

    @torch.no_grad()
    def __call__(self, optimizer: Any, steps_done: int) -> None:
        """Young-unit bias correction; call once right after ``optimizer.step()`` (``steps_done`` counts it)."""
        optimizer, groups = self._held(optimizer)
        for group, pairs in groups:
            pairs = [(p, layer) for p, layer in pairs if p in optimizer.state
                     and any(layer.births[i] > 0 for i in range(layer.init_rank, layer.rank))]
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
        _correct_bias(group, [p for p, _ in pairs], [s["exp_avg"] for s in state], [s[second] for s in state],
                      [layer for _, layer in pairs], counts, steps_done)

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


def _correct_bias(group: Mapping[str, Any], params: list[Tensor], m: list[Tensor], v: list[Tensor],
                  layers: list[AdapterLayer], counts: list[float], steps_done: int) -> None:
    """Recompute the young rows' Adam update with each row's own age (see the module docstring).

    The per-row coefficients of ``c1(x)(√v/√c2(x) + ε) = a·√v + b`` come from a few distinct ages
    and are computed in Python, then moved in one tensor; rows that are not young get the
    parameter's own (a, b) on both sides, so their correction is exactly zero.
    """
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, eps = float(group["lr"]), float(group["eps"])
    memo: dict[float, tuple[float, float]] = {}

    def coefficients(age: float) -> tuple[float, float]:
        if age not in memo:
            c1 = 1.0 - beta1 ** age
            memo[age] = (c1 / math.sqrt(1.0 - beta2 ** age), c1 * eps)
        return memo[age]

    own_a, own_b, shared_a, shared_b = [], [], [], []
    for layer, t in zip(layers, counts):
        applied = coefficients(t)
        own = [coefficients(min(max(steps_done - birth, 1), t)) if birth > 0 and i < layer.rank else applied
               for i, birth in enumerate(layer.births)]
        own_a.append([[a] for a, _ in own])
        own_b.append([[b] for _, b in own])
        shared_a.append([[applied[0]]] * layer.capacity)
        shared_b.append([[applied[1]]] * layer.capacity)
    table = torch.tensor([own_a, own_b, shared_a, shared_b], dtype=m[0].dtype, device=m[0].device)  # (4, L, cap, 1)
    own_a_t, own_b_t, shared_a_t, shared_b_t = (list(part.unbind(0)) for part in table.unbind(0))  # (cap, 1) each
    root_v = torch._foreach_sqrt(v)
    own = torch._foreach_addcmul(own_b_t, root_v, own_a_t)  # c1(s)(√v/√c2(s) + ε)
    shared = torch._foreach_addcmul(shared_b_t, root_v, shared_a_t)  # c1(t)(√v/√c2(t) + ε), as applied
    difference = torch._foreach_div(m, shared)
    torch._foreach_addcdiv_(difference, m, own, value=-1.0)  # (u_t − u_s) / lr: x − x = 0 off the young rows
    torch._foreach_add_(params, difference, alpha=lr)
