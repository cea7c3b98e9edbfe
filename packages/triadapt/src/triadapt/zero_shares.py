"""Where DeepSpeed keeps each rank unit's fp32 master copy, without importing DeepSpeed (it reads the attributes
DeepSpeed's optimizers set; written against DeepSpeed 0.19).

DeepSpeed's optimizer wrappers hold a torch optimizer that steps fp32 copies of the trainable parameters, never
the parameters themselves, so `triadapt.fresh_units` cannot find the units there. `follow_deepspeed` tells the
controller where this process's part of each unit parameter lives in those copies
(`Controller.follow_flat_optimizer`), so that joining units start from their initial values with no optimizer
history and young units get their own bias correction under every ZeRO stage, as they do without DeepSpeed.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from triadapt.fresh_units import ADAM_FAMILY, FlatShare

__all__ = ["follow_deepspeed", "zero_shares"]


def follow_deepspeed(controller: Any, optimizer: Any) -> bool:
    """If ``optimizer`` is (or wraps, as accelerate's wrapper does) a DeepSpeed optimizer that steps copies of the
    parameters, keep ``controller``'s units fresh in those copies. Returns whether it did; False for any other
    optimizer (ZeRO-0 in fp32 steps the parameters themselves, which `Controller.step` already reaches).

    Only copies stepped by ``torch.optim.Adam`` or ``AdamW`` are followed. Another optimizer there (DeepSpeed's
    ``DeepSpeedCPUAdam``, which ZeRO-Offload uses on a GPU, keeps its ZeRO-3 state per sub-group and steps it
    outside ``step()``) gets a warning: its units share their matrix's optimizer state, as before.
    """
    units = [layer.units for layer in controller.layers.values()]
    engine_optimizer = optimizer
    for _ in range(3):  # accelerate's wrapper -> DeepSpeed's optimizer -> the torch optimizer it steps
        inner = getattr(engine_optimizer, "optimizer", None)
        if inner is None:
            return False
        if isinstance(inner, torch.optim.Optimizer) and zero_shares(engine_optimizer, []) is not None:
            if not isinstance(inner, ADAM_FAMILY):
                warnings.warn(f"{type(inner).__name__} steps DeepSpeed's copies: grown units keep their matrix's "
                              f"optimizer state there (waiting units decayed, young units bias-corrected with its "
                              f"step count); only torch.optim.Adam and AdamW are followed", stacklevel=2)
                return False
            controller.follow_flat_optimizer(inner, lambda: zero_shares(engine_optimizer, units) or [])
            return True
        engine_optimizer = inner
    return False


def zero_shares(zero_optimizer: Any, params: list[torch.nn.Parameter]) -> list[FlatShare] | None:
    """This process's part of each of ``params`` in the fp32 copies that DeepSpeed's ``zero_optimizer`` steps, or
    None when it is not such an optimizer.

    * ZeRO-1/2 (``DeepSpeedZeroOptimizer``) and ``BF16_Optimizer`` (ZeRO-1 in bf16 with fp32 gradient
      accumulation) map each parameter to a fragment of this process's flat fp32 partition (``param._hp_mapping``,
      None where this process holds none of it).
    * ZeRO-0 in bf16 (``FP16_UnfusedOptimizer``) keeps a whole fp32 copy of each parameter.
    * ZeRO-3 (``DeepSpeedZeroOptimizer_Stage3``) partitions each parameter on its own: this process's elements are
      ``ds_tensor`` (the engine's copy, gathered into the whole parameter after each step: the share's mirror) and
      a range of ``fp32_partitioned_groups_flat`` (``grad_position``).
    """
    if hasattr(zero_optimizer, "fp32_partitioned_groups_flat"):
        return [share for param in params for share in _stage3_share(zero_optimizer, param)]
    flats = getattr(zero_optimizer, "single_partition_of_fp32_groups", None)
    if flats is None:
        flats = getattr(zero_optimizer, "fp32_groups_flat_partition", None)
    if flats is None and hasattr(zero_optimizer, "fp16_groups") and hasattr(zero_optimizer, "fp32_groups"):
        copies = {id(low): high for lows, highs in zip(zero_optimizer.fp16_groups, zero_optimizer.fp32_groups)
                  for low, high in zip(lows, highs)}
        return [FlatShare(param, 0, copies[id(param)], 0, param.numel()) for param in params if id(param) in copies]
    if flats is None:
        return None
    shares = []
    for param in params:
        mapping = getattr(param, "_hp_mapping", None)
        if mapping is not None:
            shares.append(FlatShare(param, mapping.lp_fragment_address.start, flats[mapping.param_group_index],
                                    mapping.hp_fragment_address.start, mapping.hp_fragment_address.numel))
    return shares


def _stage3_share(zero_optimizer: Any, param: torch.nn.Parameter) -> list[FlatShare]:
    group, offset, _ = zero_optimizer.grad_position[zero_optimizer.get_param_id(param)]
    size = param.ds_tensor.ds_numel  # every process's partition has this size (the last one padded)
    start = zero_optimizer._get_param_partition_rank(param) * size
    numel = min(size, param.ds_numel - start)
    if numel <= 0:
        return []
    return [FlatShare(param, start, zero_optimizer.fp32_partitioned_groups_flat[group], offset, numel,
                      mirror=param.ds_tensor.narrow(0, 0, numel))]
