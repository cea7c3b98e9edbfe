"""Run by test_distributed under torchrun (2 processes): DDP with find_unused_parameters=True, as the runner
sets it, must leave inactive rank units without gradient and untouched by AdamW (weight decay included),
before and after growth events. Writes OUT/units<rank>.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from triadapt import TriAdaptConfig, inject
from triadapt.testing.models import ToyModel, toy_batch

dist.init_process_group("gloo")
model = ToyModel()
ctl = inject(model, TriAdaptConfig(target_modules=ToyModel.targets, init_rank=1, ref_rank=2, max_rank=4, seed=0,
                                   warmup_steps=1, growth_interval=2, total_steps=8, threshold="fixed", fixed_k=4))
ddp = DistributedDataParallel(model, find_unused_parameters=True)
optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2, weight_decay=0.1)
x, y = toy_batch(seed=dist.get_rank())
checks = []
for step in range(8):
    torch.nn.functional.cross_entropy(ddp(x), y).backward()
    inactive = [p for layer in ctl.layers.values() for u in list(layer.units)[layer.rank:] for p in u.parameters()]
    active = [p for layer in ctl.layers.values() for u in layer.active_units() for p in u.parameters()]
    before = [p.detach().clone() for p in inactive]
    optimizer.step()
    checks.append({"active_have_grads": all(p.grad is not None for p in active),
                   "inactive_grads_none": all(p.grad is None for p in inactive),
                   "inactive_unchanged": all(torch.equal(a, p) for a, p in zip(before, inactive)),
                   "total_rank": sum(ctl.ranks.values())})
    optimizer.zero_grad(set_to_none=True)
    ctl.step()
Path(sys.argv[1], f"units{dist.get_rank()}.json").write_text(json.dumps(checks))
