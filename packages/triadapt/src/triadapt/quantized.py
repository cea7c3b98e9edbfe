"""Quantized base layers: bitsandbytes 4-bit (NF4, FP4, double quantisation) and 8-bit (LLM.int8).

bitsandbytes' ``Linear4bit`` and ``Linear8bitLt`` subclass ``nn.Linear``, so they are adapted like
any linear layer; their weights are packed, not the (out, in) matrix. This module is what the
adapter asks of such a base, recognised by the class of its weight (no import needed for that):

* ``compute_dtype``: the dtype the base computes in (the adapter's forward follows it);
* ``dequantize`` / ``requantize``: the merge dequantises W, adds ΔW and quantises the sum again
  with the layer's own settings (block size, code, double quantisation, storage);
* ``logical_numel``: the parameters a packed weight stands for.

bitsandbytes is imported only to merge. Merging is lossy: the merged weight is Q(W + ΔW). Per
element, its error against W + ΔW is at most g/2 · m_b + |s_b − m_b| for 4 bits, with g the widest
gap of the normalised code (NF4: 0.304, FP4: 0.333), m_b the absolute maximum of the element's
block of W + ΔW, and s_b the scale stored for that block (s_b = m_b, or within about 2 % of it
with double quantisation, which stores the scales in 8 bits), plus the rounding of W + ΔW to the
dtype the 4-bit weight was quantised from when that is bfloat16 or float16 (tested in float32);
for 8 bits, half a step of the row's scale, absmax_row / 254, plus bitsandbytes' float16 rounding
of W + ΔW. Un-merging subtracts ΔW
and quantises again (a second such error). A base quantised any other way cannot be merged:
`QuantizationError` names its quantisation and nothing is changed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from triadapt.errors import TriAdaptError

FOUR_BIT, EIGHT_BIT = "Params4bit", "Int8Params"


class QuantizationError(TriAdaptError):
    """A quantised base layer that this operation cannot handle (named in the message)."""


def kind(base: nn.Module) -> str | None:
    """'4bit', '8bit', 'other' (a packed weight of unknown origin) or None for a plain float weight."""
    weight = getattr(base, "weight", None)
    name = type(weight).__name__
    if name == FOUR_BIT:
        return "4bit"
    if name == EIGHT_BIT and weight.dtype == torch.int8:
        return "8bit"
    if weight is not None and not (weight.dtype.is_floating_point and weight.dtype.itemsize > 1):
        return "other"
    return None


def describe(base: nn.Module) -> str:
    """The quantisation of ``base`` in words, for messages (``bitsandbytes 4-bit nf4, double quantisation``)."""
    weight, found = base.weight, kind(base)
    if found == "4bit":
        double = ", double quantisation" if getattr(weight, "compress_statistics", False) else ""
        return f"bitsandbytes 4-bit {getattr(weight, 'quant_type', '?')}{double}"
    if found == "8bit":
        return "bitsandbytes 8-bit (LLM.int8)"
    return f"{type(base).__name__} with a {type(weight).__name__} weight of dtype {weight.dtype}"


def compute_dtype(base: nn.Module, x: Tensor) -> torch.dtype | None:
    """The dtype the quantised base multiplies in for input ``x``; None for a float base."""
    found = kind(base)
    if found == "4bit":
        return getattr(base, "compute_dtype", None) or x.dtype
    if found == "8bit":
        return x.dtype  # LLM.int8 returns (and adds its outliers) in the input's dtype
    return None


def logical_numel(param: Tensor) -> int:
    """Entries of the matrix a (possibly packed) parameter stands for."""
    state = getattr(param, "quant_state", None)
    if type(param).__name__ == FOUR_BIT and state is not None:
        return int(torch.Size(state.shape).numel())
    return param.numel()


def check_mergeable(base: nn.Module) -> None:
    """Raise `QuantizationError` naming the quantisation if ΔW cannot be merged into ``base``."""
    found = kind(base)
    if found is None:
        return
    if found == "other":
        raise QuantizationError(f"cannot merge into {describe(base)}: only bitsandbytes 4-bit and 8-bit bases "
                                f"can be dequantised and quantised again; keep the adapter unmerged")
    weight = base.weight
    if weight.device.type == "meta":
        raise QuantizationError(f"cannot merge into {describe(base)}: its weight is offloaded (meta device)")
    if found == "4bit" and getattr(weight, "quant_state", None) is None:
        raise QuantizationError(f"cannot merge into {describe(base)}: the weight has no quantisation state "
                                f"(not quantised yet: move the model to its device first)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise QuantizationError(f"cannot merge into {describe(base)}: bitsandbytes is not importable") from None


def dequantize(base: nn.Module) -> Tensor:
    """The (out, in) float32 weight a quantised ``base`` computes with."""
    import bitsandbytes.functional as bnbf

    weight = base.weight
    if kind(base) == "4bit":
        data, state = _unpacked_4bit(weight)
        return bnbf.dequantize_4bit(data, state).float()
    scales = weight.SCB if getattr(weight, "SCB", None) is not None else base.state.SCB
    return bnbf.int8_vectorwise_dequant(weight.data, scales).float()


def requantize(base: nn.Module, matrix: Tensor) -> None:
    """Replace the weight of ``base`` by ``matrix`` (out, in) quantised with the layer's own settings."""
    import bitsandbytes as bnb

    weight, device = base.weight, base.weight.device
    if kind(base) == "4bit":
        _, state = _unpacked_4bit(weight)
        fresh = bnb.nn.Params4bit(matrix.to(state.dtype).cpu(), requires_grad=False, blocksize=weight.blocksize,
                                  compress_statistics=weight.compress_statistics, quant_type=weight.quant_type,
                                  quant_storage=weight.quant_storage, module=base)
        base.weight = fresh.to(device)
        return
    fresh = bnb.nn.Int8Params(matrix.cpu(), requires_grad=False, has_fp16_weights=False)
    base.weight = fresh.to(device)
    base.state.CB = base.state.SCB = None  # the layer reads the new CB / SCB from its weight at the next forward


def _unpacked_4bit(weight: Any) -> tuple[Tensor, Any]:
    """The packed data and state in bitsandbytes' standard layout (CPU inference may have repacked them).

    On CPUs with AVX512-BF16, a 4-bit layer evaluated without gradients repacks its weight for a fused kernel:
    the data in blocks of 32 output rows, the block scales (``absmax``) transposed and in bfloat16.
    bitsandbytes' inverse rewrites the state it is given and restores the scales' order only for double
    quantisation, so it works on a copy here (the layer keeps computing with its own) and the plain scales are
    put back in row order: the values the layer computes with, bfloat16 scales included.
    """
    state = weight.quant_state
    if not getattr(state, "packing_format_for_cpu", False):
        return weight.data, state
    import copy

    import bitsandbytes.functional as bnbf

    inverse = getattr(bnbf, "_convert_weight_packed_for_cpu_inverse", None)
    if inverse is None:
        raise QuantizationError("cannot merge a 4-bit weight in bitsandbytes' CPU inference layout with this "
                                "bitsandbytes version: merge before evaluating, or on the training device")
    nested = getattr(state, "original_nested", False)
    data, restored = inverse(weight.data, copy.deepcopy(state))
    if not nested:
        restored.absmax = restored.absmax.T.reshape(-1).float()
    return data, restored


def snapshot(base: nn.Module) -> tuple[Any, ...]:
    """What `restore` needs to undo a merge into ``base`` exactly (the weight object, 8-bit and 4-bit state)."""
    state = getattr(base, "state", None)
    return base.weight, getattr(state, "CB", None), getattr(state, "SCB", None), getattr(base, "quant_state", None)


def restore(base: nn.Module, saved: tuple[Any, ...]) -> None:
    weight, cb, scb, quant_state = saved
    base.weight = weight
    if kind(base) == "8bit":
        base.state.CB, base.state.SCB = cb, scb
    elif kind(base) == "4bit" and hasattr(base, "quant_state"):
        base.quant_state = quant_state  # the module's copy, which requantize() replaced with the new weight's
