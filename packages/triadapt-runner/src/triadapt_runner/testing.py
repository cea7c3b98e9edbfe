"""Conformance suite for methods: what an ``approach`` must do to be a row of a grid.

A method plugin's tests call the checks of `MethodConformance` (each is one test)::

    from triadapt_runner.testing import MethodConformance

    suite = MethodConformance("linear-probe", distribution="my-method-plugin")

    def test_registered():
        suite.check_registered()

    def test_grid_row(tmp_path):
        suite.check_grid_row(tmp_path)

    ...

They train the built-in model (all-MiniLM-L6-v2) on a few rows of the built-in Rotten Tomatoes
data, so they run offline in about a minute each on a laptop CPU. The multi-process checks start
real launchers (``torchrun``, ``deepspeed``) with 2 CPU processes over gloo, for methods that say
they support them (``Method.distributed``); for the others they check that such runs are refused
before anything starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from triadapt_runner.errors import RunnerError

SMALL = {"task": "rotten_tomatoes",
         "data": {"max_train_samples": 24, "max_eval_samples": 16, "max_length": 32},
         "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 16, "learning_rate": 2e-3, "log_every": 1,
                   "threads": 1},
         "adapter": {"ref_rank": 2, "max_rank": 4}}


class MethodConformance:
    """The checks for the method registered as ``approach`` (with ``approach_options``, and ``extra`` config)."""

    def __init__(self, approach: str, *, distribution: str | None = None, approach_options: dict | None = None,
                 extra: dict[str, Any] | None = None):
        self.approach, self.distribution = approach, distribution
        self.options = dict(approach_options or {})
        self.extra = dict(extra or {})

    # -- configs ----------------------------------------------------------------------------------
    def config_dict(self, **train: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(SMALL))
        out.update({"approach": self.approach, "approach_options": self.options})
        for key, value in self.extra.items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
        out["train"].update(train)
        return out

    def config(self, **train: Any) -> Any:
        from triadapt_runner.config import RunConfig

        return RunConfig.from_dict(self.config_dict(**train))

    @property
    def method(self) -> Any:
        from triadapt_runner.methods.registry import methods

        return methods().get(self.approach)

    # -- checks -----------------------------------------------------------------------------------
    def check_registered(self) -> None:
        """Found by name, with its provider, and listed by `triadapt plugins`."""
        from triadapt_runner.methods.registry import MethodRegistry, methods

        assert self.approach in methods().names(), f"{self.approach!r} is not registered"
        dist, _ = methods().provider(self.approach)
        if self.distribution is not None:
            assert dist == self.distribution, (dist, self.distribution)
        listed = [p for p in MethodRegistry().plugins() if self.approach in p.methods]
        assert len(listed) == 1 and listed[0].error is None, listed

    def check_plan_leaves_model_unchanged(self) -> None:
        """``plan`` checks the method on a model and changes nothing of it (weights, flags, modules)."""
        from triadapt_runner.models import model_path
        from triadapt_runner.tasks.registry import kind_for
        from triadapt_runner.tasks.specs import TASKS

        cfg = self.config()
        task = TASKS[cfg.data.task]
        model = kind_for(task).build_model(model_path(cfg.model), task)
        before = _snapshot(model)
        plan = self.method.plan(model, cfg, 12)
        assert isinstance(plan.summary, str) and plan.summary, "plan() must summarise what the method will do"
        after = _snapshot(model)
        assert before[0] == after[0], "plan() changed the model's modules"
        assert before[1] == after[1], "plan() changed which parameters train"
        assert all(torch.equal(before[2][k], after[2][k]) for k in before[2]), "plan() changed a weight"

    def check_grid_row(self, tmp_path: Path) -> Any:
        """A one-cell grid: the cell finishes, is tagged with its provider, has its metrics, and `compare` shows it."""
        from triadapt_runner.grid.ablate import run_grid
        from triadapt_runner.grid.spec import parse_grid
        from triadapt_runner.tracking.compare import build_table, collect_runs
        from triadapt_runner.tracking.runs import Tracker

        base = self.config_dict()
        spec = parse_grid({"name": f"conformance-{self.approach}", "base": base, "seeds": [0]})
        tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "conformance")
        outcome = run_grid(spec, tracker, progress=False, checkpoint_root=tmp_path / "checkpoints")
        assert [o.status for o in outcome.outcomes] == ["finished"], [o.error for o in outcome.outcomes]
        run = tracker.client.get_run(outcome.outcomes[0].run_id)
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["triadapt.approach"] == self.approach
        provider = tags["triadapt.provider.approach"]
        if self.distribution is not None:
            assert provider.split("==")[0] == self.distribution, provider
        assert metrics["trained_parameters"] > 0
        assert any(key.startswith("result_") for key in metrics), sorted(metrics)
        table = build_table(collect_runs(tracker, parent_id=outcome.parent_id))
        assert tags["triadapt.method"] in table.methods, table.methods
        return run

    def check_saves_what_it_trained(self, tmp_path: Path) -> None:
        """What ``save`` writes holds trained weights only: far smaller than the model (unless it saves nothing)."""
        from triadapt_runner.training import train_run

        result = train_run(self.config(), tmp_path / "run", progress=False)
        adapter = result.output_dir / "adapter"
        if not adapter.exists():  # a method may save nothing (full fine-tuning: the whole model)
            return
        files = [p for p in adapter.rglob("*") if p.is_file()]
        assert files, f"{adapter} is empty"
        trained_bytes = 4 * result.run_metrics["trained_parameters"]
        assert sum(p.stat().st_size for p in files) < 2 * trained_bytes + 1_000_000, "base weights saved?"

    def check_resumes_exactly(self, tmp_path: Path) -> None:
        """Stopped after a checkpoint and rerun, the run ends exactly as an uninterrupted one."""
        from triadapt_runner.training import train_run

        cfg = self.config(checkpoint_every=2)
        full = train_run(cfg, tmp_path / "full", progress=False)

        def stop(metrics: dict[str, float], step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt("stopped after the checkpoint at step 2")

        try:
            train_run(cfg, tmp_path / "stopped", log=stop, progress=False, checkpoint_dir=tmp_path / "ckpt")
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the run was not stopped at step 3")
        resumed = train_run(cfg, tmp_path / "stopped", progress=False, checkpoint_dir=tmp_path / "ckpt")
        assert resumed.metrics == full.metrics, (resumed.metrics, full.metrics)
        assert resumed.ranks == full.ranks
        logits = [(tmp_path / name / "eval_logits.json") for name in ("full", "stopped")]
        if logits[0].exists():
            assert json.loads(logits[0].read_text()) == json.loads(logits[1].read_text())

    def check_bad_options(self, *bad: tuple[dict[str, Any], str]) -> None:
        """An unknown option, and each ``(approach_options, expected text)`` given, is one line before training."""
        cases = [({"no_such_option": 1}, "approach_options.no_such_option"), *bad]
        for options, expected in cases:
            data = {**self.config_dict(), "approach_options": {**self.options, **options}}
            message = _refusal(data)
            assert expected in message and "\n" not in message, message

    def check_process_setups(self, tmp_path: Path) -> None:
        """DDP and ZeRO-2 with 2 processes train when the method says it supports them; else they are refused."""
        from triadapt_runner.config import RunConfig
        from triadapt_runner.grid.spec import Cell
        from triadapt_runner.preflight import Preflight

        if not self.method.distributed:
            for world, train in ((2, {}), (1, {"zero_stage": 2})):
                cfg = RunConfig.from_dict(self.config_dict(**train))
                check = Preflight(world=world).check(Cell("c", cfg, {}, 0))
                assert check.error and "multi-process or DeepSpeed" in check.error, check.error
            return
        for name, launcher, train in (("ddp", ["torchrun", "--nproc_per_node", "2"], {}),
                                      ("zero2", ["deepspeed", "--num_gpus", "2"], {"zero_stage": 2})):
            out = tmp_path / name
            _launch(launcher, self.config_dict(**train), out)
            run = _only_run(out)
            assert run.info.status == "FINISHED" and run.data.tags["triadapt.world_size"] == "2", run.data.tags


def _snapshot(model: torch.nn.Module) -> tuple[list[str], dict[str, bool], dict[str, torch.Tensor]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ([n for n, _ in model.named_modules()], {n: p.requires_grad for n, p in model.named_parameters()}, state)


def _refusal(data: dict[str, Any]) -> str:
    """The one-line error a config (or its preflight) gives; an AssertionError if it is accepted."""
    from triadapt_runner.config import RunConfig
    from triadapt_runner.grid.spec import Cell
    from triadapt_runner.preflight import Preflight

    try:
        cfg = RunConfig.from_dict(data)
    except RunnerError as exc:
        return str(exc)
    check = Preflight(world=1).check(Cell("c", cfg, {}, 0))
    assert check.error, f"accepted: {data['approach_options']}"
    return check.error


def _launch(launcher: list[str], config: dict[str, Any], out: Path) -> None:
    import yaml

    from triadapt_runner.distributed.setup import free_port

    out.mkdir(parents=True, exist_ok=True)
    (out / "run.yaml").write_text(yaml.safe_dump(config))
    port = ["--master_port", str(free_port())]
    binary = Path(sys.executable).with_name(launcher[0])
    module = ["-m"] if launcher[0] == "torchrun" else ["--module"]
    cmd = [str(binary), *launcher[1:], *port, *module, "triadapt_runner.cli", "train", "--config",
           str(out / "run.yaml"), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--no-progress"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=out)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _only_run(out: Path) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]
