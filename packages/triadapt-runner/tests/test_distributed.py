"""Real 2-process runs on CPU (gloo): DeepSpeed ZeRO-2 under the deepspeed launcher, DDP under `accelerate launch`,
ZeRO-1/2/3 and DDP under torchrun, a grid under torchrun, and crash-and-resume (single process: exact; ZeRO-2: same
rank pattern, loss within tolerance). The runner sets itself up from the launcher's environment alone, so most runs
use torchrun, the lightest launcher (the deepspeed launcher first starts two Python processes that each import
DeepSpeed, one after the other, before the workers start)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import free_port, write_yaml

pytest.importorskip("deepspeed", reason="the distributed tests need deepspeed (pip install 'triadapt-runner[deepspeed]')")

WORKER = Path(__file__).with_name("distributed_worker.py")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
CONFIG = {"task": "rotten_tomatoes",
          "data": {"max_train_samples": 64, "max_eval_samples": 32, "max_length": 32},
          "train": {"epochs": 3, "batch_size": 8, "eval_batch_size": 16, "learning_rate": 1e-2, "log_every": 1,
                    "threads": 1, "weight_decay": 0.1},  # waiting units decay in the optimizer until they join
          "adapter": {"ref_rank": 2, "max_rank": 4, "warmup_steps": 1, "growth_interval": 2}}


def config(**train):
    return {**CONFIG, "train": {**CONFIG["train"], **train}}


def launch(kind, out, cfg, checkpoints="-", stop_after=None):
    """Run the worker under a real launcher with 2 processes: ``kind`` 'torchrun', 'deepspeed' or 'accelerate' (or
    alone for 'single'; 1 GPU under the deepspeed launcher for 'gpu')."""
    out.mkdir(parents=True, exist_ok=True)
    args = [str(out), json.dumps(cfg), str(checkpoints)] + ([str(stop_after)] if stop_after else [])
    port = str(free_port())
    if kind in ("deepspeed", "gpu"):
        gpus = "1" if kind == "gpu" else "2"
        cmd = [str(BIN / "deepspeed"), "--num_gpus", gpus, "--master_port", port, str(WORKER), *args]
        env = ENV if kind == "deepspeed" else {k: v for k, v in ENV.items() if k != "DS_ACCELERATOR"}
    elif kind == "torchrun":
        from triadapt_runner.config import RunConfig
        from triadapt_runner.distributed.setup import setup_for

        cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, str(WORKER), *args]
        train = RunConfig.from_dict({"task": cfg["task"], "train": cfg["train"]}).train  # (cfg may hold worker keys)
        env = {**ENV, **setup_for(train, 2).launch_environment()}  # as the runner's own jobs
    elif kind == "accelerate":
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, str(WORKER), *args]
        env = {**ENV, "ACCELERATE_USE_CPU": "1"}
    else:
        cmd, env = [sys.executable, str(WORKER), *args], ENV
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    left = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))
    if kind != "single" and proc.returncode == 0:  # DeepSpeed's CPU all-reduce files are removed at exit
        assert not left, f"left in /dev/shm: {[p.name for p in left]}"
    for path in left:  # a run that crashed on purpose (resume tests) could not remove its own
        path.unlink(missing_ok=True)
    return proc


def results(out, world=2):
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def assert_consistent_run(out, world=2):
    per_rank = results(out, world)
    assert [r["world_size"] for r in per_rank] == [world] * world
    assert all(r["ranks"] == per_rank[0]["ranks"] for r in per_rank)  # identical growth decisions
    assert all(r["events"] == per_rank[0]["events"] for r in per_rank)
    assert len(per_rank[0]["events"]) >= 3
    losses = [[loss for _, loss in r["losses"]] for r in per_rank]
    first = sum(sum(l[:4]) for l in losses) / (4 * world)
    last = sum(sum(l[-4:]) for l in losses) / (4 * world)
    assert last < first - 0.02, (first, last)
    return per_rank


def assert_followed_whole(per_rank):
    """The processes' parts of the units in DeepSpeed's fp32 copies add up to every unit element, once: the refresh
    reaches all of them (ZeRO 1-3 partition the copies between the processes)."""
    assert sum(r["followed"] for r in per_rank) == per_rank[0]["unit_elements"] > 0, per_rank
    assert all(r["followed"] > 0 for r in per_rank), per_rank


def same_events(left, right, tol=1e-4):
    """Equal growth decisions (step, k, grown) and scores equal up to ``tol``."""
    assert [(e["step"], e["k"], e["grown"]) for e in left] == [(e["step"], e["k"], e["grown"]) for e in right]
    for a, b in zip(left, right):
        torch.testing.assert_close(torch.tensor(list(a["scores"].values())), torch.tensor(list(b["scores"].values())),
                                   atol=tol, rtol=tol)
    return True


def reloaded_logits(cfg, adapter_dir):
    """A fresh single-process model with the saved adapter, on the same validation rows."""
    from transformers import AutoTokenizer

    import triadapt
    from triadapt_runner.config import RunConfig
    from triadapt_runner.tasks.data.loading import load_task
    from triadapt_runner.tasks.registry import kind_for
    from triadapt_runner.models import model_path

    run = RunConfig.from_dict(cfg)
    task, splits = load_task(run.data)
    kind = kind_for(task)
    loader = kind.build_loaders(run, task, splits, AutoTokenizer.from_pretrained(model_path(run.model))).evaluation
    model = kind.build_model(model_path(run.model), task)
    triadapt.load(model, adapter_dir)
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**batch).logits for batch in loader])


def finished_run(factory, kind, cfg):
    """The output folder of a launched run that must succeed (shared by several tests)."""
    out = factory.mktemp(kind)
    proc = launch(kind, out, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def zero2(tmp_path_factory):
    return finished_run(tmp_path_factory, "deepspeed", config(zero_stage=2))


@pytest.fixture(scope="module")
def zero3(tmp_path_factory):  # built whole on each process, then partitioned (the escape hatch for odd classes)
    return finished_run(tmp_path_factory, "torchrun", config(zero_stage=3, zero3_init=False))


def test_zero3_init_never_holds_the_whole_base_model(tmp_path):
    """ZeRO-3 on a tiny Llama (causal-LM SFT, with gradient checkpointing): by default the model is built inside
    deepspeed.zero.Init, so each of the 2 processes holds about half of every base weight from the start; adapters
    are whole and identical on both, ranks grow, the loss falls, and the saved adapter loads into a model built
    whole."""
    from test_causal_lm import TINY_LM, tiny_llama

    model = tiny_llama(tmp_path / "llama")
    cfg = {"model": model, "task": "rotten_tomatoes_sft", **TINY_LM,
           "data": {**TINY_LM["data"], "max_train_samples": 64},
           "train": {**TINY_LM["train"], "epochs": 2, "batch_size": 4, "zero_stage": 3,
                     "gradient_checkpointing": True, "threads": 1},
           "adapter": {**TINY_LM["adapter"], "warmup_steps": 1, "growth_interval": 2}}
    out = finished_run_at(tmp_path / "run", cfg)
    per_rank = assert_consistent_run(out)
    for rank in per_rank:
        assert rank["base_local"] <= 0.6 * rank["base_full"], rank
    assert per_rank[0]["metrics"] == per_rank[1]["metrics"]
    from transformers import AutoModelForCausalLM

    import triadapt

    whole = AutoModelForCausalLM.from_pretrained(model)
    ctl = triadapt.load(whole, out / "run0" / "adapter")
    assert ctl.ranks == per_rank[0]["ranks"]


def finished_run_at(out, cfg):
    proc = launch("torchrun", out, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_two_processes(stage, zero2, zero3):
    out = zero2 if stage == 2 else zero3
    per_rank = assert_consistent_run(out)
    assert all(r["base_local"] == r["base_full"] for r in per_rank)  # ZeRO-2, and ZeRO-3 with zero3_init false
    assert_followed_whole(per_rank)
    saved = json.loads((out / "run0" / "eval_logits.json").read_text())
    again = reloaded_logits(config(zero_stage=stage), out / "run0" / "adapter")
    torch.testing.assert_close(again, torch.tensor(saved), atol=1e-5, rtol=1e-5)


def curve(out):
    """Process 0's training loss at every step."""
    return torch.tensor([loss for _, loss in results(out)[0]["losses"]], dtype=torch.float64)


def test_zero3_matches_zero2(zero2, zero3):
    """ZeRO-3 partitions the base weights but keeps the rank units whole: same growth, same losses."""
    two, three = results(zero2), results(zero3)
    assert same_events(two[0]["events"], three[0]["events"])
    assert (curve(zero3) - curve(zero2)).abs().max() <= SAME_CURVE


# What growth does to the optimizer under ZeRO. DeepSpeed's optimizers step fp32 copies of the parameters, which
# `triadapt.zero_shares` lets the controller follow: joining units get their initial values and no history in
# those copies, young units their own bias correction inside DeepSpeed's step. With weight decay 0.1 and a growth
# event every 2 steps (5 events in 12 steps), process 0's loss curve, measured on 2 CPU processes (2026-12-03):
# * ZeRO-2 and ZeRO-3 vs DDP: at most 6.0e-8 and 1.2e-7 at any step (ZeRO-3 vs ZeRO-2: 6.0e-8);
# * ZeRO-2 without the refresh (the worker's "refresh": false) vs with it: 1.2e-7 at step 3 (the first joined
#   units had decayed for 2 steps), 1.5e-6 at step 4, then growing to 1.8e-3.
SAME_CURVE = 1e-6


def test_zero_loss_curves_equal_ddps(zero2, zero3, ddp):
    assert [e["step"] for e in results(ddp)[0]["events"]] == [2, 4, 6, 8, 10]  # of 12 steps
    for out in (zero2, zero3):
        assert (curve(out) - curve(ddp)).abs().max() <= SAME_CURVE, out


def test_the_refresh_reaches_deepspeeds_copies(zero2, tmp_path):
    stale = finished_run_at(tmp_path, {**config(zero_stage=2), "refresh": False})
    moved = (curve(stale) - curve(zero2)).abs()
    assert moved[:2].max() == 0 and moved[2] <= SAME_CURVE, moved.tolist()
    assert moved.max() >= 1000 * SAME_CURVE, moved.tolist()


@pytest.mark.parametrize("train", [
    {"zero_stage": 1, "offload_optimizer": True, "gradient_accumulation_steps": 2, "epochs": 5},
    {"zero_stage": 3, "mixed_precision": "bf16"}], ids=["zero1-offload-accumulation", "zero3-bf16"])
def test_deepspeed_offload_accumulation_and_zero3_in_bf16(train, tmp_path):
    """ZeRO-3 in bf16: the adapters, added after zero.Init built the model in bf16, are cast to bf16 too (ZeRO-3
    refuses parameters of two dtypes). ZeRO-0 in bf16 runs in benchmarks/perf/zero_growth.py."""
    cfg = config(**train)
    proc = launch("torchrun", tmp_path, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    per_rank = assert_consistent_run(tmp_path)
    assert_followed_whole(per_rank)  # in bf16 and with the optimizer offloaded too
    steps = 64 // (8 * 2) // train.get("gradient_accumulation_steps", 1) * train.get("epochs", 3)
    assert per_rank[0]["total_steps"] == steps  # growth counts optimizer steps, not micro-batches
    saved = json.loads((tmp_path / "run0" / "eval_logits.json").read_text())
    tol = 2e-2 if train.get("mixed_precision") == "bf16" else 1e-5
    torch.testing.assert_close(reloaded_logits(cfg, tmp_path / "run0" / "adapter"), torch.tensor(saved),
                               atol=tol, rtol=tol)


DDP = config(gradient_checkpointing=True)  # DDP runs also check non-reentrant gradient checkpointing with adapters


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    return finished_run(tmp_path_factory, "accelerate", DDP)


def test_ddp_through_accelerate_launch(ddp):
    assert_consistent_run(ddp)
    saved = json.loads((ddp / "run0" / "eval_logits.json").read_text())
    torch.testing.assert_close(reloaded_logits(config(), ddp / "run0" / "adapter"), torch.tensor(saved),
                               atol=1e-5, rtol=1e-5)


def test_ddp_resume_after_a_crash(ddp, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert launch("torchrun", tmp_path, DDP, checkpoints=ckpt, stop_after=6).returncode != 0
    resumed = launch("torchrun", tmp_path, DDP, checkpoints=ckpt)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    full, again = results(ddp), results(tmp_path)
    assert [r["ranks"] for r in again] == [full[0]["ranks"]] * 2
    after = [loss for step, loss in full[0]["losses"] if step > 6]
    torch.testing.assert_close(torch.tensor([loss for _, loss in again[0]["losses"]]), torch.tensor(after),
                               atol=1e-6, rtol=0)


def test_single_process_resume_at_a_growth_event_is_exact(tmp_path):
    """Killed right after the checkpoint at step 6, with a later save cut short (a `.partial` folder): the rerun
    ignores the partial folder, resumes from step 6, removes it at its next save, and equals the uninterrupted
    run."""
    cfg = {**config(), "train": {**config()["train"], "epochs": 2}}
    full, crashed, ckpt = tmp_path / "full", tmp_path / "crashed", tmp_path / "ckpt"
    assert launch("single", full, cfg).returncode == 0
    crash = launch("single", crashed, cfg, checkpoints=ckpt, stop_after=6)  # step 6 is a growth event
    assert crash.returncode == 17, crash.stderr[-3000:]
    cell = next(ckpt.rglob("step-6")).parent
    assert sorted(p.name for p in cell.iterdir()) == ["step-4", "step-6"]  # the two newest are kept
    shutil.copytree(cell / "step-6", cell / "step-7.partial")  # newer than step 6 but never complete
    (cell / "step-7.partial" / "model.safetensors").write_bytes(b"cut short")
    resumed = launch("single", crashed, cfg, checkpoints=ckpt)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step-6" in resumed.stdout
    assert not list(ckpt.rglob("*.partial"))

    a, b = results(full, 1)[0], results(crashed, 1)[0]
    assert a["events"] == b["events"] and a["ranks"] == b["ranks"] and a["metrics"] == b["metrics"]
    assert [x for x in a["losses"] if x[0] > 6] == b["losses"]  # every step after the resume, bit for bit
    from safetensors.torch import load_file

    left = load_file(str(full / "run0" / "adapter" / "adapter_model.safetensors"))
    right = load_file(str(crashed / "run0" / "adapter" / "adapter_model.safetensors"))
    assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_zero2_resume_after_a_crash(zero2, tmp_path):
    ckpt = tmp_path / "ckpt"
    crash = launch("torchrun", tmp_path, config(zero_stage=2), checkpoints=ckpt, stop_after=4)
    assert crash.returncode != 0
    resumed = launch("torchrun", tmp_path, config(zero_stage=2), checkpoints=ckpt)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    full, again = results(zero2), results(tmp_path)
    assert [r["ranks"] for r in again] == [full[0]["ranks"]] * 2
    assert same_events(again[0]["events"], full[0]["events"])
    # stated tolerance 1e-6 for every training loss after the resume (measured on CPU: bit for bit)
    after = [loss for step, loss in full[0]["losses"] if step > 4]
    torch.testing.assert_close(torch.tensor([loss for _, loss in again[0]["losses"]]), torch.tensor(after),
                               atol=1e-6, rtol=0)


def test_grid_under_torchrun_logs_one_child_run_per_cell(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_yaml(tmp_path / "grid.yaml", {
        "name": "dist", "experiment": "dist", "base": {**CONFIG, "train": {**CONFIG["train"], "epochs": 1}},
        "axes": [{"product": {"adapter.threshold": ["linear", "nonlinear"]}}], "seeds": [0]})
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m",
           "triadapt_runner.cli", "ablate", str(grid), "--tracking-uri", uri, "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900,
                          env={**ENV, "ACCELERATE_USE_CPU": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("grid done: 2 finished") == 1  # printed by the main process only
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("dist").experiment_id
    cells = client.search_runs([experiment], "tags.`triadapt.role` = 'cell'")
    parents = client.search_runs([experiment], "tags.`triadapt.role` = 'parent'")
    assert len(cells) == 2 and len(parents) == 1
    assert {r.data.tags["triadapt.world_size"] for r in cells} == {"2"}
    assert all(r.info.status == "FINISHED" for r in cells + parents)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 ZeRO on CUDA needs a GPU: run `nox -s gpu` there")
@pytest.mark.parametrize("stage", [2, 3])
def test_gpu_bf16_zero(stage, tmp_path):
    cfg = config(zero_stage=stage, mixed_precision="bf16")
    proc = launch("gpu", tmp_path, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_consistent_run(tmp_path, world=1)
    saved = json.loads((tmp_path / "run0" / "eval_logits.json").read_text())
    again = reloaded_logits(cfg, tmp_path / "run0" / "adapter")  # fp32 on the CPU vs the bf16 run
    torch.testing.assert_close(again, torch.tensor(saved), atol=2e-2, rtol=2e-2)


def test_ddp_units_join_fresh(tmp_path):
    """Under DDP (find_unused_parameters=True) a not-yet-grown unit gets a zero gradient and joins with its initial
    values and no optimizer history, identically on both processes, as alone."""
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER.with_name("ddp_units_worker.py")), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    written = sorted(p.name for p in tmp_path.glob("units*.json"))
    assert proc.returncode == 0, f"checks written: {written}\n" + proc.stderr[-3000:]
    for rank in (0, 1):
        checks = json.loads((tmp_path / f"units{rank}.json").read_text())
        assert all(c["active_have_grads"] and c["active_grads_equal"] and c["inactive_grads_zero"]
                   and c["joined_fresh"] and c["units_equal"] for c in checks), checks
        assert checks[-1]["total_rank"] > checks[0]["total_rank"]  # growth happened during the run


def test_gradient_scorer_sees_full_gradients_under_zero2(tmp_path):
    """A gradient-reading scorer plugin gets the full (reduced) gradient under ZeRO-2, as under DDP."""
    cfg = {**config(epochs=1), "adapter": {**CONFIG["adapter"], "scorer": "grad-norm"}}  # the first event: step 2
    ds = launch("torchrun", tmp_path / "zero2", {**cfg, "train": {**cfg["train"], "zero_stage": 2}})
    assert ds.returncode == 0, ds.stdout[-3000:] + ds.stderr[-3000:]
    plain = launch("torchrun", tmp_path / "ddp", cfg)
    assert plain.returncode == 0, plain.stdout[-3000:] + plain.stderr[-3000:]
    zero, reference = results(tmp_path / "zero2"), results(tmp_path / "ddp")
    assert all(r["ranks"] == zero[0]["ranks"] for r in zero)
    # the first event sees the same gradients (measured: within 1e-11 absolute, 1.6e-6 relative on the
    # smallest score); later ones drift apart numerically (another AdamW implementation), so only the first
    # is compared. A partition or a local gradient would be off by tens of per cent.
    first, expected = zero[0]["events"][0], reference[0]["events"][0]
    assert first["grown"] == expected["grown"]
    torch.testing.assert_close(torch.tensor(list(first["scores"].values()), dtype=torch.float64),
                               torch.tensor(list(expected["scores"].values()), dtype=torch.float64),
                               rtol=1e-5, atol=1e-12)
