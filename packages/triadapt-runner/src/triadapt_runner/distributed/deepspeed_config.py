"""Reading a user's DeepSpeed JSON config (``train.deepspeed_config``): checks only, nothing heavy imported."""

from __future__ import annotations

import json
from typing import Any

from triadapt_runner.errors import invalid


def read_deepspeed_config(path: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, bad JSON or fp16 is a one-line error."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (FileNotFoundError, IsADirectoryError):
        raise invalid("train.deepspeed_config", path, "no such file; give the path of a DeepSpeed JSON config") from None
    except json.JSONDecodeError as exc:
        raise invalid("train.deepspeed_config", path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise invalid("train.deepspeed_config", path, "must hold a JSON object")
    if (data.get("fp16") or {}).get("enabled"):
        raise invalid("train.deepspeed_config", path, "fp16 is not supported; use bf16 (\"bf16\": {\"enabled\": true})")
    return data


def configured_stage(train: Any) -> int | None:
    """The ZeRO stage a run's ``train`` section asks for (``zero_stage``, else its DeepSpeed file's); None: no DeepSpeed."""
    if train.zero_stage is not None:
        return int(train.zero_stage)
    if not train.deepspeed_config:
        return None
    return int((read_deepspeed_config(train.deepspeed_config).get("zero_optimization") or {}).get("stage", 0))
