"""The runner joins the process group of a multi-process launch and leaves it at the end of a command
(two real processes under torchrun, gloo); alone, there is no group to join or leave."""

import json
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from conftest import free_port
from triadapt_runner.distributed.processes import init_processes, leave_processes

SCRIPT = """
import json, os, sys
import torch.distributed as dist
from triadapt_runner.distributed.processes import init_processes, leave_processes

init_processes()
joined = dist.is_initialized() and dist.get_world_size() == 2
init_processes()  # a second command in the same process joins nothing new
leave_processes()
left = not dist.is_initialized()
leave_processes()  # leaving twice is harmless
with open(os.path.join(sys.argv[1], f"group{os.environ['RANK']}.json"), "w") as out:
    json.dump({"joined": joined, "left": left}, out)
"""


def test_two_processes_join_and_leave(tmp_path):
    script = tmp_path / "group_worker.py"
    script.write_text(SCRIPT)
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"group{rank}.json").read_text()) == {"joined": True, "left": True}


def test_alone_there_is_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    init_processes()
    assert not dist.is_initialized()
    leave_processes()
    assert not dist.is_initialized()
