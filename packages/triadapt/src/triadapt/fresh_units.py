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
masks.

**Engines that step copies** (DeepSpeed ZeRO 1–3, and ZeRO-0 in bf16: the torch optimizer
steps fp32 copies, flat partitions or one per parameter, then the engine copies them into the
model's parameters) hold no unit parameter in the optimizer, so the above cannot find them.
`Controller.follow_flat_optimizer` takes where each unit parameter's elements live there
(`FlatShare`, this process's part of it; `triadapt.zero_shares` finds them for DeepSpeed); then
both happen on those copies: the reset writes the initial values into the master copy (and the
model's parameter) and zeroes the state there, and the young rows' correction runs as a
post-step hook of that optimizer, inside the engine's step, before the engine copies the master
values into the model's parameters and gathers them. Each process corrects and resets only its
own share, with no communication. Without that call such optimizers are left alone: units share
the flat group's step count and reserved units are decayed with it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

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


@dataclass(frozen=True)
class FlatShare:
    """This process's part of a unit parameter in an optimizer that steps flat copies (DeepSpeed ZeRO).

    Elements ``[start, start + numel)`` of ``param`` (flattened) are elements ``[offset, offset + numel)`` of
    ``flat`` (flattened), a parameter of that optimizer (the fp32 master copy it steps; its state has ``flat``'s
    shape).
    ``mirror``, if given, is a 1-D tensor of ``numel`` elements that holds the same values for the engine until
    its next step (ZeRO-3's partition of the parameter): a reset writes it too.
    """

    param: Tensor
    start: int
    flat: Tensor
    offset: int
    numel: int
    mirror: Tensor | None = None


class UnitRefresher:
    """Keeps grown units as fresh as new parameters in the optimizer; one per controller."""

    def __init__(self, layers: Mapping[str, AdapterLayer]):
        self.layers = dict(layers)
        self._last_step: dict[int, float] = {}  # id(param) -> optimizer step count at the last correction
        self._warned: set[type] = set()
        self._held_memo: tuple[Any, tuple, list] | None = None  # (optimizer, its param-group signature, groups)
        self._young: dict[tuple, YoungRows] = {}  # (id(param group), dtype, device) -> its young rows
        self._row_views = RowViews()
        self._flat: tuple[Any, Callable[[], Iterable[FlatShare]]] | None = None  # (optimizer, its shares)
        self._flat_hook: Any = None

    def follow_flat(self, optimizer: Any, shares: Callable[[], Iterable[FlatShare]],
                    steps_done: Callable[[], int]) -> None:
        """Reach the units through ``shares()`` in ``optimizer``, which steps flat copies of them (see the module doc).

        The young rows' correction runs as a post-step hook of ``optimizer`` (``steps_done()``: the steps done
        with this one); `reset_joining` resets the shares too. ``shares`` is called each time (an engine may
        rebuild its mapping, e.g. when it loads a checkpoint).
        """
        if self._flat_hook is not None:
            self._flat_hook.remove()
        self._flat = (optimizer, shares)
        self._flat_hook = optimizer.register_step_post_hook(lambda opt, *_: self._correct_flat(opt, steps_done()))

    @torch.no_grad()
    def _correct_flat(self, optimizer: Any, steps_done: int) -> None:
        """Inside the engine's step, right after ``optimizer`` stepped: the young rows' own-age correction on the
        shares it has just stepped (an engine may step one param group at a time)."""
        assert self._flat is not None
        stepped = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        by_param = {id(layer.units): layer for layer in self.layers.values()}
        for share in self._flat[1]():
            group, layer = stepped.get(id(share.flat)), by_param.get(id(share.param))
            state = optimizer.state.get(share.flat) if group is not None else None
            if not state or layer is None or not any(layer.births[:layer.rank]):
                continue
            if not isinstance(optimizer, ADAM_FAMILY):
                if type(optimizer) not in self._warned and "step" in state:
                    self._warned.add(type(optimizer))
                    warnings.warn(f"{type(optimizer).__name__} counts steps per parameter: units grown during "
                                  f"training share their matrix's step count (only torch.optim.Adam and AdamW get "
                                  f"each unit's own bias correction)", stacklevel=2)
                return
            _correct_share(share, layer, group, state, steps_done)

    def _reset_flat(self, joined: Mapping[int, tuple[AdapterLayer, int]]) -> None:
        """The joining rows' elements in the shares: initial values in the master copy (and the mirror), zero state."""
        assert self._flat is not None
        optimizer, shares = self._flat
        for share in shares():
            if id(share.param) not in joined:
                continue
            layer, amount = joined[id(share.param)]
            width = layer.layout.width
            lo = max((layer.rank - amount) * width, share.start)
            hi = min(layer.rank * width, share.start + share.numel)
            if lo >= hi:
                continue
            initial = layer.reserve_full.reshape(-1)[lo:hi]
            at = share.offset + lo - share.start
            share.flat.view(-1).narrow(0, at, hi - lo).copy_(initial)
            for value in optimizer.state.get(share.flat, {}).values():
                if torch.is_tensor(value) and value.shape == share.flat.shape:
                    value.view(-1).narrow(0, at, hi - lo).zero_()
            if share.mirror is not None:
                share.mirror.narrow(0, lo - share.start, hi - lo).copy_(initial)

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
        parameters (DeepSpeed ZeRO) nothing is, since the engine would overwrite the values, unless
        `follow_flat` told where it keeps them: then the values and those copies are reset.
        """
        joined = {id(self.layers[name].units): (self.layers[name], amount) for name, amount in grown.items()}
        state: Mapping[Any, Any] = {}
        if optimizer is not None:
            optimizer, groups = self._held(optimizer)
            held = {id(p) for _, group_pairs in groups for p, _ in group_pairs}
            if self._flat is None:
                joined = {key: value for key, value in joined.items() if key in held}
            state = optimizer.state if groups else {}
        if self._flat is not None:
            self._reset_flat(joined)
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


def _correct_share(share: FlatShare, layer: AdapterLayer, group: Mapping[str, Any], state: Mapping[str, Any],
                   steps_done: int) -> None:
    """`triadapt.young_rows`' correction on the young rows' elements in one share (1-D views of its master copy)."""
    t = float(state["step"])
    births = [b if b > 0 and min(max(steps_done - b, 1), t) < t else None for b in layer.births[:layer.rank]]
    ages = [None if b is None else min(max(steps_done - b, 1), t) for b in births]
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, eps = float(group["lr"]), float(group["eps"])
    m, v = state["exp_avg"].view(-1), state["max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"].view(-1)
    width, end = layer.layout.width, share.start + share.numel  # the units may be released inside a ZeRO-3 step

    def coefficients(age: float) -> tuple[float, float]:
        c1 = 1.0 - beta1 ** age
        return c1 / math.sqrt(1.0 - beta2 ** age), c1 * eps

    applied_a, applied_b = coefficients(t)
    for age, run in itertools.groupby(range(len(ages)), key=ages.__getitem__):  # consecutive rows of one age
        rows = list(run)
        first, stop = max(rows[0] * width, share.start), min((rows[-1] + 1) * width, end)
        if age is None or first >= stop:
            continue
        at, size = share.offset + first - share.start, stop - first
        own_a, own_b = coefficients(age)
        root_v = v.narrow(0, at, size).sqrt()
        own = (root_v * own_a).add_(own_b).reciprocal_()  # 1 / (c1(s)(√v/√c2(s) + ε))
        change = root_v.mul_(applied_a).add_(applied_b).reciprocal_().sub_(own)  # t's, − own
        share.flat.view(-1).narrow(0, at, size).addcmul_(m.narrow(0, at, size), change, value=lr)


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
