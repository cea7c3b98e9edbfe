"""Which layers of a model get adapters: default target sets and name matching.

A list of names matches a module whose dotted name equals an entry or ends with
``"." + entry`` (so ``"output.dense"`` matches ``"...attention.output.dense"`` and
``"...layer.0.output.dense"``). A string is one regular expression matched against the
whole name. Only ``nn.Linear`` and GPT-2 ``Conv1D`` layers are adaptable.
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from triadapt.errors import TargetError
from triadapt.layer import is_adaptable

# The six linear kinds of each transformer layer the paper adapts (its GLUE setup: Wq, Wk, Wv, Wo, Wf1, Wf2).
_BERT_LIKE = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
_DEBERTA = ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"]
_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Mixture-of-experts decoders: in transformers 5 the routed experts are fused 3-D parameters (gate_up_proj,
# down_proj of shape (experts, ·, ·)), not nn.Linear layers, so the attention projections are what can be adapted.
_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]

DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "deberta": ["in_proj", "attention.output.dense", "intermediate.dense", "output.dense"],
    "deberta-v2": _DEBERTA,
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "qwen2_moe": _LLAMA,  # attention and the shared expert (its routed experts are fused, see above)
    "qwen3_moe": _ATTENTION,
    "mixtral": _ATTENTION,
    "olmoe": _ATTENTION,
}

# Task heads trained in full and saved with the adapter when trainable_modules is None.
DEFAULT_HEADS = ("classifier", "score", "qa_outputs")


def model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def default_targets(model: nn.Module) -> list[str]:
    kind = model_type(model)
    if kind not in DEFAULT_TARGETS:
        known = ", ".join(sorted(DEFAULT_TARGETS))
        raise TargetError(f"target_modules=None is invalid for model_type={kind!r}: no default target set "
                          f"(defaults exist for {known}); pass target_modules explicitly")
    return DEFAULT_TARGETS[kind]


def name_matches(name: str, targets: Sequence[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def adaptable_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if name and is_adaptable(module)]


def find_targets(model: nn.Module, targets: Sequence[str] | str | None,
                 exclude: Sequence[str] = ()) -> list[str]:
    """Names of the adaptable layers matched by ``targets`` (in module order)."""
    targets = default_targets(model) if targets is None else targets
    found = [name for name in adaptable_names(model)
             if name_matches(name, targets) and not any(name_matches(name, [e]) for e in exclude)]
    if not found:
        raise TargetError(f"target_modules={targets!r} matches no linear layer of this model; its linear layers "
                          f"are: {', '.join(_short_names(adaptable_names(model)))}")
    return found


def find_heads(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    """Names of the modules trained in full (task heads)."""
    children = dict(model.named_modules())
    if names is None:
        return [n for n in children if n and n.split(".")[-1] in DEFAULT_HEADS and "." not in n]
    missing = [n for n in names if not any(m == n or m.endswith("." + n) for m in children)]
    if missing:
        raise TargetError(f"trainable_modules={list(names)!r}: {missing[0]!r} is not a module of this model; "
                          f"top-level modules are: {', '.join(n for n in children if n and '.' not in n)}")
    return [m for m in children if m and any(m == n or m.endswith("." + n) for n in names)]


def _short_names(names: list[str]) -> list[str]:
    """Distinct layer names with layer indices collapsed (``encoder.layer.*.attention.self.query``)."""
    seen: dict[str, None] = {}
    for name in names:
        seen[re.sub(r"\.\d+\.", ".*.", name)] = None
    return list(seen)
