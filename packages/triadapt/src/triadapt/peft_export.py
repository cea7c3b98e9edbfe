"""Export a trained adapter as a standard `peft` LoRA adapter (no peft import needed).

For each matrix, α/(r+ε)·B D A = (α'/r)·B'A' with A' = A, B' = α/(r+ε)·B D and a per-module
``alpha_pattern`` α' = r, so peft's scale α'/r is 1. Ranks go to ``rank_pattern``; heads
go to ``modules_to_save``. ``peft.PeftModel.from_pretrained`` then reproduces the outputs.

Servers that take one rank per adapter (most multi-LoRA servers) cannot read ``rank_pattern``:
``pad_to_max_rank=True`` gives every module the largest rank R, A' padded with zero rows and B'
with zero columns (the product is unchanged), and one ``r = lora_alpha = R``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from triadapt.errors import TriAdaptError
from triadapt.layer import is_conv1d

PEFT_PREFIX = "base_model.model."
TASK_TYPES = {"classifier": "SEQ_CLS", "score": "SEQ_CLS", "qa_outputs": "QUESTION_ANS"}


def export_peft(controller: Any, path: str | os.PathLike, *, base_model_name_or_path: str | None = None,
                pad_to_max_rank: bool = False) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` in peft's LoRA format.

    Per-module ranks go to ``rank_pattern``; with ``pad_to_max_rank`` every module is zero-padded to the
    largest rank instead, for servers that take one rank per adapter.
    """
    if any(layer.merged for layer in controller.layers.values()):
        raise TriAdaptError("cannot export merged adapters: unmerge() first")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    conv1d = set()
    width = max(controller.ranks.values()) if pad_to_max_rank else None
    with torch.no_grad():
        for name, layer in controller.layers.items():
            factors = layer.factors()
            down, up = factors.down, factors.up_with_core() * layer.scale  # (r, n), (d, r)
            if width is not None:
                down = torch.nn.functional.pad(down, (0, 0, 0, width - layer.rank))  # (R, n): zero rows below
                up = torch.nn.functional.pad(up, (0, width - layer.rank))  # (d, R): zero columns on the right
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = down.contiguous()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = up.contiguous()
            if is_conv1d(layer.base_layer):
                conv1d.add(name)
        for head in controller.heads:
            for key, param in controller.model.get_submodule(head).named_parameters():
                tensors[f"{PEFT_PREFIX}{head}.{key}"] = param.detach().contiguous()
    if conv1d and len(conv1d) != len(controller.layers):
        raise TriAdaptError("cannot export a mix of nn.Linear and Conv1D targets: peft's fan_in_fan_out is global")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(
        peft_config(controller, base_model_name_or_path, fan_in_fan_out=bool(conv1d), padded=width is not None),
        indent=2, sort_keys=True))
    return out


def peft_config(controller: Any, base_model_name_or_path: str | None, *, fan_in_fan_out: bool,
                padded: bool = False) -> dict[str, Any]:
    ranks = controller.ranks
    # peft matches pattern keys as regular expressions against module names: escape them
    patterns = {} if padded else {re.escape(name): rank for name, rank in ranks.items()}
    default_rank = max(ranks.values())
    heads = controller.heads
    task = next((TASK_TYPES[h.split(".")[-1]] for h in heads if h.split(".")[-1] in TASK_TYPES), None)
    return {
        "peft_type": "LORA",
        "task_type": task,
        "base_model_name_or_path": base_model_name_or_path,
        "r": default_rank,
        "lora_alpha": default_rank,
        "rank_pattern": patterns,
        "alpha_pattern": dict(patterns),
        "target_modules": sorted(ranks),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "modules_to_save": heads or None,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
