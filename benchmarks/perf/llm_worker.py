"""One process of benchmarks/perf/llm.py's ZeRO runs: train with the runner, report memory. Args: OUT CONFIG_JSON."""

import json
import os
import resource
import sys
from pathlib import Path

args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
out, config = Path(args[0]), json.loads(args[1])

from triadapt_runner.config import RunConfig  # noqa: E402
from triadapt_runner.distributed.processes import init_processes, leave_processes  # noqa: E402
from triadapt_runner.tasks.base import TaskKind  # noqa: E402
from triadapt_runner.training import train_run  # noqa: E402

held = {}
original = TaskKind.build_model


def build_and_measure(self, path, task, meta=False, load=None):
    """The base-weight bytes this process holds once the model is built (a ZeRO-3 partition or all of it)."""
    model = original(self, path, task, meta=meta, load=load)
    if not meta:
        held["base_bytes_full"] = sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in model.parameters())
        held["base_bytes_local"] = sum((p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel())
                                       * p.element_size() for p in model.parameters())
    return model


TaskKind.build_model = build_and_measure
init_processes()
rank = int(os.environ.get("RANK", "0"))
train_run(RunConfig.from_dict(config), out / f"run{rank}", progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
(out / f"rank{rank}.json").write_text(json.dumps({"peak_rss_mib": peak, **held}))
leave_processes()
