"""Run by the distributed tests under a real launcher (deepspeed, torchrun, accelerate launch).

Each process trains with the runner's `train_run` and writes what it saw to ``OUT/rank<N>.json``:
world size, final ranks, growth events and its losses. The scorer ``grad-norm`` (registered
here, as a plugin would be) scores by the summed squared gradient norms it observed through
`triadapt.gradients.full_grad` (a missing gradient counts as zero, which a comparison exposes). Arguments: OUT CONFIG_JSON [CHECKPOINT_DIR]
[STOP_AFTER_CHECKPOINT]. With STOP_AFTER_CHECKPOINT the process exits hard (os._exit, as a
crash would) right after the first checkpoint at or after that step is complete. The config's
key ``"refresh": false`` (read here only, not a run option) turns `triadapt.fresh_units` off:
joining units keep what the optimizer did to them while they waited and young units get their
matrix's bias correction. Under DeepSpeed, ``followed`` is how many unit elements this process
reaches in the fp32 copies that DeepSpeed's optimizer steps (`triadapt.zero_shares`), ``unit_elements``
how many there are.
"""

import json
import os
import sys
from pathlib import Path

args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
out, config = Path(args[0]), json.loads(args[1])
checkpoints = args[2] if len(args) > 2 and args[2] != "-" else None
stop_after = int(args[3]) if len(args) > 3 else None

from triadapt import ScorerSpec, hookimpl, registry  # noqa: E402
from triadapt.gradients import full_grad  # noqa: E402
from triadapt.scorers import Scorer  # noqa: E402
from triadapt_runner import checkpointing  # noqa: E402
from triadapt_runner.config import RunConfig  # noqa: E402
from triadapt_runner.distributed.processes import init_processes, leave_processes  # noqa: E402
from triadapt_runner.training import train_run  # noqa: E402

if stop_after is not None:  # simulate a crash right after a complete checkpoint
    original = checkpointing.Checkpointer.save

    def save_then_crash(self, step):
        path = original(self, step)
        if step >= stop_after:
            os._exit(17)
        return path

    checkpointing.Checkpointer.save = save_then_crash

class GradNormScorer(Scorer):
    name = "grad-norm"
    observes_steps = True

    def __init__(self):
        self.total = {}

    def observe(self, layers, step):
        for name, layer in layers.items():
            grad = full_grad(layer.units)
            if grad is not None:
                self.total[name] = self.total.get(name, 0.0) + float(grad[: layer.rank].float().pow(2).sum())

    def scores(self, layers):
        return {name: self.total.get(name, 0.0) for name in layers}


class GradNormPlugin:
    @hookimpl
    def triadapt_scorers(self):
        return [ScorerSpec("grad-norm", lambda cfg: GradNormScorer())]


registry().register(GradNormPlugin(), name="grad-norm")

from triadapt_runner.tasks.base import TaskKind  # noqa: E402

built = {}
original_build = TaskKind.build_model


def build_and_measure(self, path, task, meta=False, load=None):
    """Record how much of the base model this process holds right after building it (ZeRO-3 partitions)."""
    model = original_build(self, path, task, meta=meta, load=load)
    if not meta:
        built["base_full"] = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        built["base_local"] = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
                                  for p in model.parameters())
    return model


TaskKind.build_model = build_and_measure
from triadapt.fresh_units import UnitRefresher  # noqa: E402

followed = {}
original_correct = UnitRefresher._correct_flat


def correct_and_count(self, optimizer, steps_done):
    """At the first step under DeepSpeed: how many unit elements this process reaches in the engine's copies."""
    if not followed:
        followed["followed"] = sum(share.numel for share in self._flat[1]())
        followed["unit_elements"] = sum(getattr(layer.units, "ds_numel", layer.units.numel())
                                        for layer in self.layers.values())
    return original_correct(self, optimizer, steps_done)


UnitRefresher._correct_flat = correct_and_count
init_processes()
rank = int(os.environ.get("RANK", "0"))
if not config.pop("refresh", True):
    for name in ("__call__", "reset_joining", "follow_flat"):
        setattr(UnitRefresher, name, lambda *args, **kwargs: None)
losses = []
result = train_run(RunConfig.from_dict(config), out / f"run{rank}", progress=False, checkpoint_dir=checkpoints,
                   log=lambda metrics, step: losses.append((step, metrics["loss"])) if "loss" in metrics else None)
(out / f"rank{rank}.json").write_text(json.dumps({
    "world_size": result.world_size, "ranks": result.ranks, "events": result.events, "losses": losses,
    "metrics": result.metrics, "total_steps": result.total_steps, **built, **followed}))
leave_processes()
