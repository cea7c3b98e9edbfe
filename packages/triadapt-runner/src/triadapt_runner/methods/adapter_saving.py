"""Saving a TriAdaptLoRA adapter from a run, whatever its process set-up."""

from __future__ import annotations

from typing import Any

import torch

from triadapt_runner.distributed.setup import zero3_gathered
from triadapt_runner.errors import RunnerError


def save_adapter(ctl: Any, path: Any, accelerator: Any) -> None:
    """Save the adapter from the main process, gathering ZeRO-3-partitioned heads first; verify the file.

    Every process must call this (the gather is collective). The written tensors are read back
    and compared with the live ones: an empty or differing tensor is an error, not a silent
    half-saved adapter.
    """
    from safetensors.torch import load_file

    from triadapt.persistence import WEIGHTS_FILE, adapter_tensors

    params = [p for h in ctl.heads for p in ctl.model.get_submodule(h).parameters()]
    params += [layer.units for layer in ctl.layers.values()]
    with zero3_gathered(accelerator, params):
        if accelerator.is_main_process:
            ctl.save(path)
            live = adapter_tensors(ctl)
            saved = load_file(str(path / WEIGHTS_FILE))
            bad = sorted(k for k, v in live.items()
                         if k not in saved or saved[k].numel() == 0 or not torch.equal(saved[k], v.cpu()))
            if bad:
                raise RunnerError(f"{path / WEIGHTS_FILE}: {len(bad)} tensors are empty or differ from the model "
                                  f"after saving (first: {bad[0]}); the adapter was not saved correctly")
    accelerator.wait_for_everyone()
