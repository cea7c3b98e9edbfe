"""Exact resume in plain PyTorch: model, optimizer and controller state restored at a growth event."""

import copy
import json

import pytest
import torch

from triadapt import TriAdaptConfig, inject
from triadapt.testing.models import ToyModel, toy_batch

CONFIG = dict(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2, total_steps=20, ref_rank=3,
              max_rank=6, seed=0, orth_reg_weight=0.1)


def build():
    ctl = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2, weight_decay=0.01)
    ctl.attach(optimizer)
    return ctl, optimizer


def run(ctl, optimizer, steps, start=0):
    for step in range(start, start + steps):
        x, y = toy_batch(seed=step)
        (torch.nn.functional.cross_entropy(ctl.model(x), y) + ctl.orthogonal_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("stop", [10, 11])  # 10 is a growth event, 11 is not
def test_resume_equals_uninterrupted(stop):
    full, full_opt = build()
    run(full, full_opt, 20)

    first, first_opt = build()
    run(first, first_opt, stop)
    assert any(e.step == 10 for e in first.events)
    saved = (copy.deepcopy(first.model.state_dict()), copy.deepcopy(first_opt.state_dict()),
             json.loads(json.dumps(first.state_dict())))

    resumed, resumed_opt = build()
    resumed.model.load_state_dict(saved[0])
    resumed_opt.load_state_dict(saved[1])
    resumed.load_state_dict(saved[2])
    run(resumed, resumed_opt, 20 - stop, start=stop)

    assert resumed.ranks == full.ranks and resumed.step_count == 20
    assert [e.to_dict() for e in resumed.events] == [e.to_dict() for e in full.events]
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(a, b)
