"""TriAdaptCallback with a stock transformers.Trainer under DeepSpeed ZeRO-2 and ZeRO-3 (one CPU process, gloo):
ranks grow, the checkpoint's model files are the adapter, and a resume from a checkpoint moved to another folder
equals the uninterrupted run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port
from test_causal_lm import tiny_llama

WORKER = Path(__file__).with_name("trainer_zero_worker.py")


def run(out, stage, stop, model, resume=None):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(out), str(stage), str(stop), str(resume or ""), model]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((Path(out) / "result.json").read_text())


@pytest.mark.parametrize("stage", [2, 3])
def test_trainer_under_zero_resumes_a_moved_checkpoint_exactly(stage, tmp_path):
    model = tiny_llama(tmp_path / "llama")
    full = run(tmp_path / "full", stage, 8, model)
    assert full["step"] == 8 and full["events"] == [4, 6, 8] and sum(full["ranks"].values()) > len(full["ranks"])
    run(tmp_path / "first", stage, 4, model)
    checkpoint = tmp_path / "first" / "checkpoint-4"
    assert (checkpoint / "triadapt_adapter.json").is_file() and not (checkpoint / "model.safetensors").is_file()
    engine_files = sum(f.stat().st_size for f in (checkpoint / "global_step4").rglob("*") if f.is_file())
    base = sum(f.stat().st_size for f in Path(model).glob("*.safetensors"))
    assert engine_files < 0.5 * base  # DeepSpeed's own checkpoint leaves the frozen base out, as for peft models
    moved = tmp_path / "elsewhere" / "checkpoint-4"
    shutil.copytree(checkpoint, moved)
    resumed = run(tmp_path / "resumed", stage, 8, model, resume=moved)
    assert resumed["ranks"] == full["ranks"] and resumed["events"] == full["events"]
    import torch

    worst = max((torch.tensor(full["units"][k]) - torch.tensor(resumed["units"][k])).abs().max().item()
                for k in full["units"])
    assert worst < 1e-6
