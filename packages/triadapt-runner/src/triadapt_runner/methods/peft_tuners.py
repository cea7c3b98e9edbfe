"""``approach: peft``: any peft tuner (LoRA and DoRA, LoHa, LoKr, VeRA, IA³, AdaLoRA, …) as a row of a grid.

The run config's ``peft:`` section names the tuner (``peft_type``, any case) and holds its
fields, which go to peft's config class as written; peft's defaults fill the rest (the
``adapter`` section's rank, α and dropout are the presets' and are not read here). What the
section leaves out is filled from the run, so that the row adapts what the other rows adapt:

* ``task_type`` from the task's model: sequence classification SEQ_CLS, causal LM CAUSAL_LM,
  extractive QA QUESTION_ANS;
* ``target_modules``: the run's targets exactly as the peers choose them (``adapter.target_modules``,
  default the architecture's set), as full layer names; a written ``peft.target_modules`` is
  matched against the model's linear layers the same way (and the same way peft matches);
* ``modules_to_save``: the heads (``adapter.trainable_modules``, default the task head);
* IA³ ``feedforward_modules``: the targets that are a feed-forward block's down projection,
  whose input (the block's inner activation) IA³ scales, as the IA³ paper does, while it
  scales the other targets' output; written entries are matched against the targets;
* AdaLoRA ``total_step`` = T, and its allocation after every optimizer step, as ``peft-adalora``.

Constructing the run config checks the section's shape only (importing peft takes seconds, and
grids build every cell's config); the preflight then builds peft's config with the model's
targets (`peft_config.build`: peft's own validation, field by field), so a bad field is one
line before any MLflow run exists. VeRA needs no shape check: peft 0.21 sizes its shared
projections to the largest target and slices them, so targets of different shapes train
together. Like the peers, it runs in one process (no DDP or DeepSpeed).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from triadapt.errors import TargetError
from triadapt.targets import find_heads, find_targets, model_type, name_matches
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.methods.base import Adapted, Method, MethodPlan, RankRecord
from triadapt_runner.methods.peers import AdaLoraAdapted, PeftAdapted, _needs_peft, _targets
from triadapt_runner.methods.peft_config import build, canonical_type, peft_types
from triadapt_runner.tasks.registry import kind_of

TASK_TYPES = {"AutoModelForSequenceClassification": "SEQ_CLS", "AutoModelForCausalLM": "CAUSAL_LM",
              "AutoModelForQuestionAnswering": "QUESTION_ANS"}  # the task kind's model class -> peft's task type
NAMES = {"LORA": "LoRA", "LOHA": "LoHa", "LOKR": "LoKr", "VERA": "VeRA", "IA3": "IA³", "ADALORA": "AdaLoRA",
         "FOURIERFT": "FourierFT", "VBLORA": "VB-LoRA", "RANDLORA": "RandLoRA", "LN_TUNING": "LN tuning"}

_BERT_FFN = r".*\.layer\.\d+\.output\.dense"  # not ...attention.output.dense
_DOWN = r".*\.down_proj"
FEEDFORWARD = {  # model_type -> the feed-forward down projections (IA³'s feedforward_modules), as a full-name regex
    "bert": _BERT_FFN, "roberta": _BERT_FFN, "xlm-roberta": _BERT_FFN, "deberta": _BERT_FFN, "deberta-v2": _BERT_FFN,
    "gpt2": r".*\.mlp\.c_proj", "gpt_neox": r".*\.dense_4h_to_h",
    **{kind: _DOWN for kind in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
                                "qwen2_moe", "qwen3_moe", "mixtral", "olmoe")},
}


class PeftTuners(Method):
    """peft's tuner named by ``peft.peft_type``, with the run's targets and heads filled in."""

    name = "peft"

    def allocates_ranks(self, cfg: Any) -> bool:
        return cfg.peft["peft_type"] == "ADALORA"  # the one peft tuner whose ranks change as it trains

    def validate(self, cfg: Any) -> None:
        super().validate(cfg)  # the adapter section: its targets and heads are this method's too
        section = cfg.peft
        if section is None:
            raise invalid("peft", None, "approach 'peft' needs a peft: section with peft_type (e.g. LORA, LOHA, LOKR, "
                                        "VERA, IA3) and that tuner's fields")
        peft_type = section.get("peft_type")
        if not isinstance(peft_type, str) or not peft_type.strip():
            raise invalid("peft.peft_type", peft_type, "name the tuner, e.g. LORA, LOHA, LOKR, VERA, IA3 (peft's "
                                                       "PeftType, any case)")
        cfg.peft = {**section, "peft_type": peft_type.upper()}  # one spelling, one cell id

    def plan(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> MethodPlan:
        _needs_peft(self.name)
        _check_quantization(cfg, canonical_type(cfg.peft["peft_type"]))
        names, heads = self.targets(model, cfg)
        config = self.config(model, cfg, total_steps, names, heads)
        return MethodPlan(self._summary(cfg, config, total_steps), len(names))

    def attach(self, model: torch.nn.Module, cfg: Any, total_steps: int) -> Adapted:
        from peft import get_peft_model

        names, heads = self.targets(model, cfg)
        config = self.config(model, cfg, total_steps, names, heads)
        peft_model = get_peft_model(model, config)
        if cfg.peft["peft_type"] == "ADALORA":
            return AdaLoraAdapted(peft_model, names, {"init_r": config.init_r, "target_r": config.target_r})
        return TunerAdapted(peft_model, layer_ranks(peft_model, names), cfg.adapter_config(None).ref_rank)

    def config(self, model: torch.nn.Module, cfg: Any, total_steps: int, names: list[str], heads: list[str]) -> Any:
        """peft's config for this run on ``model``: the written fields, and the run's where they are left out."""
        peft_type, written = cfg.peft["peft_type"], _written(cfg)
        known = {f.name for f in dataclasses.fields(peft_types()[peft_type])}
        filled = _filled(cfg, peft_type, total_steps)
        if "modules_to_save" in known:
            filled["modules_to_save"] = heads or None
        fields = {**filled, **written}
        if "target_modules" in known:
            fields["target_modules"] = names  # the run's, or the written ones resolved to full names
        if peft_type == "IA3":
            fields["feedforward_modules"] = feedforward(model, names, written.get("feedforward_modules"))
        return build(peft_type, fields, given=written)

    def targets(self, model: torch.nn.Module, cfg: Any) -> tuple[list[str], list[str]]:
        """(adapted layer names, heads): the peers' choice, or ``peft.target_modules`` matched the same way."""
        given = cfg.peft.get("target_modules")
        if given is None:
            return _targets(model, cfg)
        if not (isinstance(given, str) or (isinstance(given, list) and given
                                            and all(isinstance(name, str) for name in given))):
            raise invalid("peft.target_modules", given, "must be a non-empty list of layer names or one regular "
                                                        "expression (or left out: the run's targets)")
        try:
            heads = find_heads(model, cfg.adapter.get("trainable_modules"))
        except TargetError as exc:
            raise RunnerError(f"adapter.{exc}") from None
        try:
            return find_targets(model, given, exclude=heads), heads
        except TargetError as exc:
            raise RunnerError(f"peft.{exc}") from None

    def _summary(self, cfg: Any, config: Any, total_steps: int) -> str:
        label = self.label(cfg)
        if cfg.peft["peft_type"] == "ADALORA":
            return (f"{label} r {config.init_r} → {config.target_r} per matrix, allocation from t={config.tinit} to "
                    f"t={total_steps - config.tfinal} every {config.deltaT} steps")
        rank = getattr(config, "r", None)
        if not isinstance(rank, int):
            return f"{label} on every matrix, no ranks"
        pattern = " (rank_pattern for some)" if getattr(config, "rank_pattern", None) else ""
        return f"{label} r={rank}{pattern} on every matrix, no growth"

    def label(self, cfg: Any) -> str:
        section = cfg.peft or {}
        peft_type = str(section.get("peft_type", "")).upper()
        return f"peft {NAMES.get(peft_type, peft_type)}" + (" (DoRA)" if section.get("use_dora") is True else "")


class TunerAdapted(PeftAdapted):
    """A fixed peft tuner: ranks read from its layers, None for tuners without one (IA³: no rank record)."""

    def ranks(self) -> dict[str, int] | None:
        return dict(self._ranks) if self._ranks else None

    def rank_record(self) -> RankRecord | None:
        return super().rank_record() if self._ranks else None


def layer_ranks(model: Any, names: list[str]) -> dict[str, int]:
    """The rank ``r`` of every adapted layer that has one (a ``rank_pattern`` included), by layer name."""
    base, adapter = model.get_base_model(), model.active_adapter
    ranks = {}
    for name in names:
        rank = getattr(base.get_submodule(name), "r", None)
        if isinstance(rank, dict) and isinstance(rank.get(adapter), int):
            ranks[name] = rank[adapter]
    return ranks


def feedforward(model: torch.nn.Module, names: list[str], given: Any) -> list[str]:
    """IA³'s feed-forward layers among the targets ``names``: the architecture's, or the written ones matched."""
    if given is None:
        kind = model_type(model)
        if kind not in FEEDFORWARD:
            raise invalid("peft.feedforward_modules", None, f"IA³ needs to know which targets are feed-forward layers "
                                                            f"and model_type={kind!r} has no default; list them "
                                                            f"(names of target layers, [] for none)")
        return [name for name in names if re.fullmatch(FEEDFORWARD[kind], name)]
    if isinstance(given, str):
        entries, match = [given], (lambda name, entry: _fullmatch(given, name))
    elif isinstance(given, list) and all(isinstance(entry, str) for entry in given):
        entries, match = given, (lambda name, entry: name_matches(name, [entry]))
    else:
        raise invalid("peft.feedforward_modules", given, "must be a list of target layer names or a regular expression")
    for entry in entries:
        if not any(match(name, entry) for name in names):
            raise invalid("peft.feedforward_modules", given, f"{entry!r} matches none of the adapted layers; IA³'s "
                                                             f"feed-forward layers are some of its target_modules")
    return [name for name in names if any(match(name, entry) for entry in entries)]


def _fullmatch(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error as exc:
        raise invalid("peft.feedforward_modules", pattern, f"not a regular expression ({exc})") from None


def _written(cfg: Any) -> dict[str, Any]:
    return {key: value for key, value in cfg.peft.items() if key != "peft_type"}


def _filled(cfg: Any, peft_type: str, total_steps: int) -> dict[str, Any]:
    """What the runner fills in from the run when the section leaves it out (targets and heads: in `config`)."""
    known = {f.name for f in dataclasses.fields(peft_types()[peft_type])}
    filled: dict[str, Any] = {}
    task_type = _task_type(cfg)
    if task_type is not None and "task_type" in known:
        filled["task_type"] = task_type
    if peft_type == "ADALORA":
        filled["total_step"] = total_steps
    return filled


def _task_type(cfg: Any) -> str | None:
    from peft import TaskType

    given = cfg.peft.get("task_type")
    valid = [task.value for task in TaskType]
    if given is not None and given not in valid:
        raise invalid("peft.task_type", given, f"use one of {', '.join(valid)} (left out: from the task)")
    return given or TASK_TYPES.get(kind_of(cfg.data).auto_model)


def _check_quantization(cfg: Any, peft_type: str) -> None:
    """On a 4/8-bit base a tuner needs bitsandbytes layers of its own; peft has them for a few tuners only."""
    if cfg.quantization is None:
        return
    quantizable = [name for name in sorted(peft_types()) if _has_bnb_layers(name)]
    if peft_type not in quantizable:
        raise invalid("model.quantization", cfg.quantization, f"peft's {NAMES.get(peft_type, peft_type)} has no "
                                                              f"4/8-bit layers; on a quantised base use peft_type "
                                                              f"{', '.join(quantizable)}")


def _has_bnb_layers(peft_type: str) -> bool:
    import importlib.util

    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    if tuner is None:
        return False
    package = tuner.__module__.rsplit(".", 1)[0]
    try:
        return importlib.util.find_spec(f"{package}.bnb") is not None
    except ModuleNotFoundError:
        return False
