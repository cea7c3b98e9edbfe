"""Gradient access for scorers that observe gradients (plain PyTorch, DDP, DeepSpeed ZeRO).

``full_grad(param)`` returns the full gradient of a parameter between ``backward`` and
``optimizer.zero_grad``, or None when it has none. In plain PyTorch and under DDP that is
``param.grad`` (DDP has already averaged it). Under DeepSpeed ZeRO ``param.grad`` is not the
gradient; the training engine (the runner) installs an accessor built on
``deepspeed.utils.safe_get_full_grad`` with ``set_grad_accessor``, so the core itself never
imports deepspeed. Accessors that communicate must be called on every rank.
"""

from __future__ import annotations

from typing import Callable

import torch

GradAccessor = Callable[[torch.nn.Parameter], "torch.Tensor | None"]


def _plain(param: torch.nn.Parameter) -> torch.Tensor | None:
    return param.grad


_accessor: GradAccessor = _plain


def full_grad(param: torch.nn.Parameter) -> torch.Tensor | None:
    return _accessor(param)


def set_grad_accessor(accessor: GradAccessor | None) -> GradAccessor:
    """Install ``accessor`` (None restores ``param.grad``); returns the previous one."""
    global _accessor
    previous, _accessor = _accessor, accessor or _plain
    return previous
