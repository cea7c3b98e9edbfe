"""``model.quantization``: the base loaded in 4 bits (NF4 with double quantisation, as QLoRA) or 8 bits
(LLM.int8) through bitsandbytes, an optional extra (``pip install 'triadapt-runner[bitsandbytes]'``).

The quantised layers compute in the run's precision (``train.mixed_precision``: bfloat16, else
float32), and the adapters follow that compute dtype (`triadapt.quantized`). Refused under
DeepSpeed ZeRO-3 (`RunConfig`), for methods that train the base weights, and for task kinds whose
models are not quantised (`TaskKind.quantizable`), each before anything starts.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from triadapt_runner.errors import invalid

EXTRA = "pip install 'triadapt-runner[bitsandbytes]'"


def check(cfg: Any, kind: Any) -> None:
    """Refuse ``model.quantization`` where it cannot work: a kind without it, or bitsandbytes missing."""
    if cfg.quantization is None:
        return
    if not kind.quantizable:
        raise invalid("model.quantization", cfg.quantization, f"task kind {kind.name!r} does not load a quantised "
                                                              f"base (causal-LM and classification tasks do)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise invalid("model.quantization", cfg.quantization, f"needs bitsandbytes: {EXTRA}")


def load_kwargs(cfg: Any) -> dict[str, Any]:
    """``from_pretrained`` arguments that quantise the base as ``cfg`` asks (none without quantization)."""
    if cfg.quantization is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    from triadapt.targets import DEFAULT_HEADS

    compute = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else torch.float32
    skip = [*DEFAULT_HEADS, "lm_head"]  # heads train in full (float); the output layer stays as peft and TRL keep it
    if cfg.quantization == "4bit":
        settings = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=skip)
    else:
        settings = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    return {"quantization_config": settings, "device_map": {"": device}}

