"""`RunConfig`: one training run (model, data, training, adapter), validated on construction.

Built from nested dicts (YAML) or dotted overrides (``train.epochs=3``); ``task`` is a
shortcut for ``data.task``. ``approach`` names the method (``triadapt``, ``increlora-style``,
``peft-lora``, ``peft-adalora``, ``full-finetune``, and ``peft``: any peft tuner, named with its fields
in a ``peft:`` section; see `triadapt_runner.methods`) and ``approach_options`` its own options. The
adapter section holds `triadapt.TriAdaptConfig` fields; ``total_steps`` is derived by the runner, and
``warmup_steps`` / ``growth_interval`` default to t0 = ΔT = T / 50 (`triadapt.config.regime_interval`),
the paper's growth regime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from triadapt import TriAdaptConfig
from triadapt.config import regime_interval
from triadapt_runner.tasks.registry import DEFAULT_KIND, KINDS, custom_kinds, kind_of
from triadapt_runner.tasks.specs import TASKS
from triadapt_runner.distributed.deepspeed_config import configured_stage, read_deepspeed_config
from triadapt_runner.errors import RunnerError, invalid
from triadapt_runner.models import DEFAULT_MODEL


@dataclass
class DataConfig:
    task: str = "rotten_tomatoes"
    glue_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    kind: str = DEFAULT_KIND  # of custom data (data.task=custom); a built-in task has its own (`triadapt data list`)
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    prompt_column: str = "prompt"  # kind sft
    response_column: str = "response"  # kind sft
    packing: bool = False  # kind lm: concatenate the texts and cut them into blocks of max_length tokens
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    validation_fraction: float = 0.1
    max_length: int = 128
    doc_stride: int | None = None  # QA: overlap of the windows over long contexts (None: min(128, max_length // 2))

    def __post_init__(self) -> None:
        known = sorted(TASKS) + ["custom"]
        if self.task not in known:
            raise invalid("data.task", self.task, f"known tasks are {', '.join(known)}")
        if self.task == "custom" and not (self.train_file and self.validation_file):
            raise invalid("data.train_file", self.train_file, "task 'custom' needs data.train_file and "
                                                              "data.validation_file")
        if not isinstance(self.kind, str) or self.kind not in custom_kinds():
            raise invalid("data.kind", self.kind, f"use one of {', '.join(custom_kinds())}")
        if self.task in TASKS and self.kind != DEFAULT_KIND and KINDS[self.kind] is not kind_of(self):
            raise invalid("data.kind", self.kind, f"task {self.task!r} is built in, of kind {kind_of(self).key!r}; "
                                                  f"data.kind is for custom data (data.task=custom)")
        kind = kind_of(self)
        if kind.both_files and bool(self.train_file) != bool(self.validation_file):
            raise invalid("data.validation_file", self.validation_file, "give both data.train_file and "
                                                                        "data.validation_file (SQuAD JSON), or neither")
        if kind.windows and self.doc_stride is not None and (not _is_int(self.doc_stride)
                                                             or not 0 < self.doc_stride < self.max_length):
            raise invalid("data.doc_stride", self.doc_stride, f"must be an integer in (0, max_length={self.max_length})")
        if not isinstance(self.packing, bool):
            raise invalid("data.packing", self.packing, "must be true or false")
        if self.packing and not kind.packing:
            raise invalid("data.packing", self.packing, "packing is for plain-text language modelling (data.kind lm)")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise invalid(f"data.{name}", value, "must be a positive integer or null")
        if not _is_int(self.max_length) or not 8 <= self.max_length <= 8192:
            raise invalid("data.max_length", self.max_length, "must be an integer in [8, 8192]")
        if not _is_number(self.validation_fraction) or not 0 < self.validation_fraction < 1:
            raise invalid("data.validation_fraction", self.validation_fraction, "must be a number in (0, 1)")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    report: str = "best"  # which epoch's validation metrics are the run's result: best | last
    mixed_precision: str = "no"  # no | bf16
    log_every: int = 10
    threads: int | None = None
    zero_stage: int | None = None  # DeepSpeed ZeRO stage 0-3; null: no DeepSpeed (DDP when launched multi-process)
    offload_optimizer: bool = False  # DeepSpeed ZeRO-Offload of the optimizer state to CPU (zero_stage >= 1)
    zero3_init: bool | None = None  # ZeRO-3: build the model partitioned (zero.Init; the default), or whole if false
    gradient_checkpointing: bool = False  # recompute activations in backward (non-reentrant: adapters get gradients)
    deepspeed_config: str | None = None  # a DeepSpeed JSON config; the fields above override its values
    checkpoint_every: int | None = None  # optimizer steps between checkpoints (null: at every growth interval)
    num_processes: int = 1  # > 1: the runner starts the run as a job of that many processes (DDP or DeepSpeed)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise invalid(f"train.{name}", value, "must be a positive integer")
        if not _is_number(self.learning_rate) or self.learning_rate <= 0:
            raise invalid("train.learning_rate", self.learning_rate, "must be a number > 0")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise invalid("train.weight_decay", self.weight_decay, "must be a number >= 0")
        if not _is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            raise invalid("train.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        if not _is_number(self.max_grad_norm) or self.max_grad_norm < 0:
            raise invalid("train.max_grad_norm", self.max_grad_norm, "must be >= 0 (0 disables clipping)")
        if not _is_int(self.seed):
            raise invalid("train.seed", self.seed, "must be an integer")
        if self.report not in ("best", "last"):
            raise invalid("train.report", self.report, "use 'best' or 'last'")
        if self.zero_stage is not None and self.zero_stage not in (0, 1, 2, 3):
            raise invalid("train.zero_stage", self.zero_stage, "use 0, 1, 2 or 3 (or null for no DeepSpeed)")
        if not isinstance(self.offload_optimizer, bool):
            raise invalid("train.offload_optimizer", self.offload_optimizer, "must be true or false")
        if self.offload_optimizer and not self.zero_stage and not self.deepspeed_config:
            raise invalid("train.offload_optimizer", self.offload_optimizer, "needs train.zero_stage 1, 2 or 3")
        if not isinstance(self.gradient_checkpointing, bool):
            raise invalid("train.gradient_checkpointing", self.gradient_checkpointing, "must be true or false")
        if self.zero3_init is not None and not isinstance(self.zero3_init, bool):
            raise invalid("train.zero3_init", self.zero3_init, "must be true, false or null (ZeRO-3's default: true)")
        if self.zero3_init is not None and self.zero_stage != 3:
            raise invalid("train.zero3_init", self.zero3_init, "needs train.zero_stage 3 (partitioned building is ZeRO-3)")
        if self.deepspeed_config is not None:
            read_deepspeed_config(self.deepspeed_config)
        if not _is_int(self.num_processes) or self.num_processes < 1:
            raise invalid("train.num_processes", self.num_processes, "must be a positive integer (processes of the run: "
                                                                     "1, or k > 1 for a k-process DDP/DeepSpeed job)")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise invalid("train.threads", self.threads, "must be a positive integer (CPU threads), or null for torch's "
                                                         "default")
        if self.checkpoint_every is not None and (not _is_int(self.checkpoint_every) or self.checkpoint_every < 1):
            raise invalid("train.checkpoint_every", self.checkpoint_every, "must be a positive integer or null")
        if self.mixed_precision not in ("no", "bf16"):
            raise invalid("train.mixed_precision", self.mixed_precision,
                          "use 'no' or 'bf16' (fp16 needs a GPU loss scaler and is not supported on CPU)")


QUANTIZATIONS = ("4bit", "8bit")  # model.quantization: bitsandbytes NF4 (QLoRA) or LLM.int8


@dataclass
class RunConfig:
    model: str = DEFAULT_MODEL
    quantization: str | None = None  # written model.quantization (``model: {name: ..., quantization: 4bit}``)
    method: str | None = None  # row label in comparisons; defaults to a summary of the approach
    approach: str = "triadapt"  # triadapt | increlora-style | peft-lora | peft-adalora | full-finetune | peft
    approach_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapter: dict[str, Any] = field(default_factory=dict)
    peft: dict[str, Any] | None = None  # approach peft: peft_type and the tuner's fields (to_dict omits it unset)

    def __post_init__(self) -> None:
        from triadapt_runner.methods.registry import methods

        method = methods().get(self.approach)  # an unknown name: one line listing the valid ones
        if not isinstance(self.approach_options, dict):
            raise invalid("approach_options", self.approach_options, "must be a mapping")
        allowed = method.options
        unknown = sorted(set(self.approach_options) - set(allowed))
        if unknown:
            raise invalid(f"approach_options.{unknown[0]}", self.approach_options[unknown[0]],
                          f"approach {self.approach!r} takes " + (", ".join(sorted(allowed)) or "no options"))
        if not isinstance(self.adapter, dict):
            raise invalid("adapter", self.adapter, "must be a mapping of TriAdaptConfig fields")
        if self.peft is not None and not isinstance(self.peft, dict):
            raise invalid("peft", self.peft, "must be a mapping: peft_type and that tuner's fields")
        if self.peft is not None and self.approach != "peft":
            raise invalid("peft", self.peft, f"only approach 'peft' reads a peft: section (approach is "
                                             f"{self.approach!r}); remove it or set approach: peft")
        self._check_quantization(method)
        method.validate(self)  # the adapter section, as this approach reads it

    def _check_quantization(self, method: Any) -> None:
        if self.quantization is None:
            return
        if self.quantization not in QUANTIZATIONS:
            raise invalid("model.quantization", self.quantization, f"use {' or '.join(QUANTIZATIONS)} (or null)")
        if not method.trains_quantized_base:
            raise invalid("model.quantization", self.quantization, f"approach {self.approach!r} trains the base "
                                                                   f"weights, which cannot be quantised; use an adapter")
        if configured_stage(self.train) == 3:
            raise invalid("model.quantization", self.quantization, "cannot be combined with DeepSpeed ZeRO-3, which "
                                                                   "partitions the base weights (use ZeRO 0-2)")

    @property
    def label(self) -> str:
        from triadapt_runner.methods.registry import methods

        return self.method or methods().get(self.approach).label(self)

    def adapter_config(self, total_steps: int | None, fields: dict[str, Any] | None = None) -> TriAdaptConfig:
        """The TriAdaptConfig of the adapter section (or of ``fields``), T and the regime defaults set.

        Resolved once per cell: the method's checks, its plan, its attach and its tags ask again and get
        the same config object (treat it as read-only), keyed by everything it is made from.
        """
        fields = dict(self.adapter if fields is None else fields)
        key = json.dumps([total_steps, self.train.seed, fields], sort_keys=True, default=repr)
        resolved = vars(self).setdefault("_resolved_adapter_configs", {})  # not a field: never hashed or logged
        if key not in resolved:
            resolved[key] = self._resolve_adapter_config(total_steps, fields)
        return resolved[key]

    def _resolve_adapter_config(self, total_steps: int | None, fields: dict[str, Any]) -> TriAdaptConfig:
        if total_steps is not None:  # explicit (the core's rule), so saved adapters and cell configs show them
            fields.setdefault("warmup_steps", regime_interval(total_steps))
            fields.setdefault("growth_interval", regime_interval(total_steps))
            fields["total_steps"] = total_steps
        else:
            fields.setdefault("warmup_steps", 0)
            fields.pop("total_steps", None)
        fields.setdefault("seed", self.train.seed)
        try:
            return TriAdaptConfig.from_dict(fields)
        except RunnerError:
            raise
        except (ValueError, KeyError) as exc:
            raise RunnerError(f"adapter.{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        quantization = data.pop("quantization")
        if quantization is not None:
            data["model"] = {"name": self.model, "quantization": quantization}
        if data["peft"] is None:  # as before the section existed: the params of every other run stay as they were
            del data["peft"]
        return data

    def config_hash(self, with_seed: bool = False) -> str:
        """Hash of the config (without the seed unless asked): equal configs, equal hash.

        Only the fields that differ from their defaults are hashed, so a release that adds a config
        field (with a default) keeps every existing grid cell's id and a rerun still resumes.
        """
        data = _without_defaults(self)
        if with_seed:
            data.setdefault("train", {})["seed"] = self.train.seed
        else:
            data.get("train", {}).pop("seed", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        if not isinstance(data, dict):
            raise invalid("run config", data, "must be a mapping")
        data = dict(data)
        if "task" in data:
            data.setdefault("data", {})
            data["data"] = {**data["data"], "task": data.pop("task")}
        if "quantization" in data:
            raise invalid("quantization", data["quantization"], "is written model.quantization "
                                                                "(model: {name: ..., quantization: 4bit})")
        if isinstance(data.get("model"), dict):
            model = data.pop("model")
            _reject_unknown("model.", model, {"name", "quantization"})
            data["model"] = model.get("name", DEFAULT_MODEL)
            data["quantization"] = model.get("quantization")
        _reject_unknown("", data, {f.name for f in dataclasses.fields(cls)})
        sections = {}
        for name, section_cls in (("data", DataConfig), ("train", TrainConfig)):
            section = data.pop(name, {}) or {}
            if not isinstance(section, dict):
                raise invalid(name, section, "must be a mapping")
            _reject_unknown(f"{name}.", section, {f.name for f in dataclasses.fields(section_cls)})
            sections[name] = section_cls(**section)
        return cls(**data, **sections)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested copy of ``data`` with dotted keys (``train.epochs``) set; ``task`` means ``data.task``."""
    out = json.loads(json.dumps(data))
    if "task" in out:  # normalise the shortcut first, so that an override of data.task wins
        out["data"] = {**(out.get("data") or {}), "task": out.pop("task")}
    for key, value in overrides.items():
        key = "data.task" if key == "task" else key
        if key == "model" and isinstance(out.get("model"), dict):
            key = "model.name"
        if key.startswith("model.") and not isinstance(out.get("model"), dict):  # the name alone: now a section
            out["model"] = {"name": out.get("model", DEFAULT_MODEL)}
        parts = key.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise invalid(key, value, f"{part!r} is not a section")
        target[parts[-1]] = value
    return out


def valid_keys() -> list[str]:
    from triadapt_runner.methods.registry import methods

    keys = ["model", "model.quantization", "method", "approach", "task", "peft", "peft.peft_type"]
    keys += sorted({f"approach_options.{name}" for approach in methods().names()
                    for name in methods().get(approach).options})
    keys += [f"data.{f.name}" for f in dataclasses.fields(DataConfig)]
    keys += [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
    keys += [f"adapter.{f.name}" for f in dataclasses.fields(TriAdaptConfig) if f.init]
    return keys


def _reject_unknown(prefix: str, data: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise RunnerError(f"{prefix}{unknown[0]}={data[unknown[0]]!r} is invalid: unknown key; "
                          f"valid keys are {', '.join(prefix + k for k in sorted(known))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _without_defaults(obj: Any) -> dict[str, Any]:
    """The dataclass ``obj`` as a dict of the fields that differ from their defaults (nested sections too)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            nested = _without_defaults(value)
            if nested:
                out[f.name] = nested
            continue
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:  # a field without a default is always part of the hash
            out[f.name] = value
            continue
        if value != default:
            out[f.name] = value
    return out
