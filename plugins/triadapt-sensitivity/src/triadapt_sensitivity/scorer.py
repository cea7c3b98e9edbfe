"""Smoothed sensitivity × uncertainty (AdaLoRA, arXiv 2303.10512, Eq. 8-10), per matrix.

After every optimizer step, for every active adapter entry w with gradient g:
``I = |w·g|``, ``Ī ← β1·Ī + (1−β1)·I``, ``Ū ← β2·Ū + (1−β2)·|I − Ī|``. At a growth event the
score of a matrix is the mean of ``Ī·Ū`` over its active entries (IncreLoRA's module score).
Entries that became active later start with zero averages, as freshly created ones would: the
statistics cover a matrix's whole unit parameter, and a reserved row's gradient is zero, so its
averages stay exactly zero until it joins (and padding entries never count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from triadapt.gradients import full_grad
from triadapt.scorers import Layers, Scorer


def check_betas(beta1: float, beta2: float) -> None:
    for label, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"strategy_options.sensitivity.{label}={beta!r} is invalid: must be in [0, 1)")


@dataclass(frozen=True)
class SensitivityOptions:
    """``strategy_options: {sensitivity: {beta1: ..., beta2: ...}}``: the two EMA factors, in [0, 1).

    Checked here too, so that a config with a bad factor fails when it is validated, not when training starts.
    """

    beta1: float = 0.85  # β1, smoothing of the sensitivity I (TriAdaptLoRA's Table V)
    beta2: float = 0.85  # β2, smoothing of its uncertainty U

    def __post_init__(self) -> None:
        check_betas(self.beta1, self.beta2)


class SensitivityScorer(Scorer):
    name = "sensitivity"
    observes_steps = True

    def __init__(self, beta1: float = 0.85, beta2: float = 0.85):
        check_betas(beta1, beta2)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.ipt: dict[str, torch.Tensor] = {}  # Ī per entry of a matrix's unit rows, keyed by layer name
        self.unc: dict[str, torch.Tensor] = {}  # Ū per entry

    @torch.no_grad()
    def observe(self, layers: Layers, step: int) -> None:
        keys, params, grads = [], [], []
        for name, layer in layers.items():
            grad = full_grad(layer.units)
            if grad is None:
                continue
            if name not in self.ipt:  # fp32 statistics, also when DeepSpeed trains the units in bf16
                self.ipt[name] = torch.zeros_like(layer.units, dtype=torch.float32)
                self.unc[name] = torch.zeros_like(layer.units, dtype=torch.float32)
            keys.append(name)
            params.append(layer.units.float())  # no copy for fp32 parameters
            grads.append(grad.float())
        if not keys:
            return
        ipts, uncs = [self.ipt[k] for k in keys], [self.unc[k] for k in keys]
        now = torch._foreach_mul(params, grads)  # w ⊙ g; 0 on reserved rows and padding (zero gradient)
        torch._foreach_abs_(now)  # I = |w ⊙ g|
        torch._foreach_mul_(ipts, self.beta1)
        torch._foreach_add_(ipts, now, alpha=1.0 - self.beta1)  # Ī ← β1 Ī + (1 − β1) I
        deviation = torch._foreach_sub(now, ipts)
        torch._foreach_abs_(deviation)  # |I − Ī|
        torch._foreach_mul_(uncs, self.beta2)
        torch._foreach_add_(uncs, deviation, alpha=1.0 - self.beta2)  # Ū ← β2 Ū + (1 − β2) |I − Ī|

    @torch.no_grad()
    def scores(self, layers: Layers) -> dict[str, float]:
        out = {}
        for name, layer in layers.items():
            count = layer.unit_numel()  # the active units' own entries
            total = float(torch.sum((self.ipt[name] * self.unc[name])[: layer.rank])) if name in self.ipt else 0.0
            out[name] = total / count if count else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"ipt": {k: v.clone() for k, v in self.ipt.items()}, "unc": {k: v.clone() for k, v in self.unc.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ipt = {k: v.clone() for k, v in state["ipt"].items()}
        self.unc = {k: v.clone() for k, v in state["unc"].items()}
