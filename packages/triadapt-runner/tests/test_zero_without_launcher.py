"""DeepSpeed ZeRO in a plain process: no launcher, a world of one on a free port (no MPI looked for)."""

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

SMALL = ["--task", "rotten_tomatoes", "--set", "data.max_train_samples=16", "--set", "data.max_eval_samples=16",
         "--set", "data.max_length=32", "--set", "train.batch_size=8", "--set", "train.threads=1",
         "--set", "adapter.ref_rank=2", "--set", "adapter.max_rank=4", "--no-progress"]
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def start(tmp_path, name, *settings):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "triadapt_runner.cli", "train", *SMALL, *settings,
           "--tracking-uri", f"sqlite:///{tmp_path / name}.db"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def finished_run(tmp_path, name):
    client = MlflowClient(f"sqlite:///{tmp_path / name}.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def test_two_plain_zero_runs_at_once(tmp_path):
    """ZeRO-2 and ZeRO-3 at the same time on one machine: each process picks its own port. (Stages 0 and 1 with
    offload share the code path; they run under a launcher in test_distributed.py.)"""
    first, second = ("zero2", "train.zero_stage=2"), ("zero3", "train.zero_stage=3")
    procs = [start(tmp_path, spec[0], *[a for s in spec[1:] for a in ("--set", s)]) for spec in (first, second)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "mpi4py" not in err
    for name in (first[0], second[0]):
        run = finished_run(tmp_path, name)
        assert run.info.status == "FINISHED"
        assert run.data.tags["triadapt.world_size"] == "1" and "result_accuracy" in run.data.metrics


def test_a_model_zero3_cannot_build_partitioned_is_one_line_before_any_mlflow_run(tmp_path, capsys, monkeypatch):
    """The preflight builds the structure on the meta device, without DeepSpeed, so it cannot see a class that
    deepspeed.zero.Init fails to build; the run opens only once the model is built, so that failure is still one
    line, exit 2, and the store is left as it was. Every model the tests use builds under zero.Init, so the failure
    is made by the one call that would raise it: transformers' `from_pretrained` while ZeRO-3 is enabled (the real
    world of one, DeepSpeed config and MiniLM around it)."""
    import transformers
    from transformers.integrations import is_deepspeed_zero3_enabled

    from conftest import assert_bad_input

    auto = transformers.AutoModelForSequenceClassification
    real = auto.from_pretrained.__func__

    def refuse_when_partitioned(cls, *args, **kwargs):
        if is_deepspeed_zero3_enabled():
            raise RuntimeError("The size of tensor a (0) must match the size of tensor b (384)")
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(auto, "from_pretrained", classmethod(refuse_when_partitioned))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    from triadapt_runner.tracking.runs import Tracker

    Tracker(uri, "triadapt")  # the store exists; it must stay as it is
    err = assert_bad_input(["train", *SMALL, "--set", "train.zero_stage=3", "--tracking-uri", uri],
                           r"model='.*minilm.*' is invalid under ZeRO-3: .*train\.zero3_init=false", uri, capsys)
    assert "size of tensor a (0)" in err
    # nothing of DeepSpeed is left switched on for a later run of this process (the next cell of a serial grid)
    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ and not is_deepspeed_zero3_enabled()
    assert all(name not in os.environ for name in LAUNCH_VARIABLES)
