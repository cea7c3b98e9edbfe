"""Grown units stay fresh when an engine steps flat copies of the unit parameters (DeepSpeed ZeRO's way).

`FlatEngine` does what DeepSpeed's ZeRO optimizers do, in one process and without DeepSpeed: the
torch optimizer steps flat master partitions (here two, cut in the middle of a row, so that a
unit parameter straddles them), whose gradient is the flattened gradient of the model's
parameters, and after the step the engine copies the masters back into the model. The run must
equal the same training with AdamW on the unit parameters themselves (`Controller.attach`, the
exact "fresh parameter" semantics, tested against an oracle in test_growth_oracle.py): the same
joins with initial values and no history, and the same own-age bias correction of young units,
with a learning-rate schedule that changes at every step.
"""

import pytest
import torch
from torch import nn

from triadapt import TriAdaptConfig, inject
from triadapt.fresh_units import FlatShare
from triadapt.testing.models import ToyModel, toy_batch

pytestmark = pytest.mark.usefixtures("float64")

CONFIG = dict(target_modules=ToyModel.targets, warmup_steps=3, growth_interval=3, total_steps=24, ref_rank=4,
              max_rank=7, init_rank=1, seed=0, orth_reg_weight=0.0)
HYPER = dict(lr=2e-2, weight_decay=0.05, foreach=False)
STEPS = 24


class FlatEngine:
    """Unit parameters flattened into two master partitions that ``optimizer`` steps; the model gets copies."""

    def __init__(self, params, cut):
        self.params = list(params)
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        self.parts = [nn.Parameter(flat[:cut].clone()), nn.Parameter(flat[cut:].clone())]
        self.optimizer = torch.optim.AdamW(self.parts, **HYPER)
        self.cut = cut

    def shares(self):
        out, begin = [], 0
        for p in self.params:
            end = begin + p.numel()
            for index, (lo, hi) in enumerate([(0, self.cut), (self.cut, self.cut + self.parts[1].numel())]):
                a, b = max(begin, lo), min(end, hi)
                if a < b:
                    out.append(FlatShare(p, a - begin, self.parts[index], a - lo, b - a))
            begin = end
        return out

    def step(self):
        grad = torch.cat([p.grad.reshape(-1) for p in self.params])
        self.parts[0].grad, self.parts[1].grad = grad[:self.cut].clone(), grad[self.cut:].clone()
        self.optimizer.step()
        flat = torch.cat([part.detach() for part in self.parts])
        begin = 0
        for p in self.params:
            p.data.copy_(flat[begin:begin + p.numel()].view_as(p))
            begin += p.numel()

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class CopyEngine(FlatEngine):
    """A master copy of each unit parameter, of its shape (DeepSpeed's ZeRO-0 in bf16: ``FP16_UnfusedOptimizer``)."""

    def __init__(self, params, cut=None):
        self.params = list(params)
        self.parts = [nn.Parameter(p.detach().clone()) for p in self.params]
        self.optimizer = torch.optim.AdamW(self.parts, **HYPER)

    def shares(self):
        return [FlatShare(p, 0, part, 0, p.numel()) for p, part in zip(self.params, self.parts)]

    def step(self):
        for p, part in zip(self.params, self.parts):
            part.grad = p.grad.clone()
        self.optimizer.step()
        for p, part in zip(self.params, self.parts):
            p.data.copy_(part.detach())


def schedule(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / (2 * STEPS))


def train(ctl, optimizer, step):
    """STEPS steps: ``step()`` steps the units (and drives the controller), a separate AdamW the head."""
    head = torch.optim.AdamW(ctl.model.classifier.parameters(), **HYPER)
    lr = schedule(optimizer)
    for index in range(STEPS):
        x, y = toy_batch(seed=index)
        nn.functional.cross_entropy(ctl.model(x), y).backward()
        step()
        head.step()
        head.zero_grad()
        lr.step()


def train_direct():
    ctl = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    optimizer = torch.optim.AdamW([layer.units for layer in ctl.layers.values()], **HYPER)
    ctl.attach(optimizer)  # the refresh right after the step, before the schedule moves the learning rate
    train(ctl, optimizer, lambda: (optimizer.step(), optimizer.zero_grad()))
    return ctl


def train_flat(follow=True, engine_type=FlatEngine):
    ctl = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    units = [layer.units for layer in ctl.layers.values()]
    middle = sum(p.numel() for p in units[:len(units) // 2])
    width = units[len(units) // 2].shape[1]
    engine = engine_type(units, middle + 3 * width + width // 2)  # inside a row of the middle matrix
    if follow:
        ctl.follow_flat_optimizer(engine.optimizer, engine.shares)
    # as the runner does under DeepSpeed: the engine's step (the young rows' correction inside it), then the controller
    train(ctl, engine.optimizer, lambda: (engine.step(), ctl.step(engine.optimizer), engine.zero_grad()))
    return ctl, engine


@pytest.mark.parametrize("engine_type", [FlatEngine, CopyEngine], ids=["flat-partitions", "copy-per-parameter"])
def test_flat_copies_match_the_unit_parameters_themselves(engine_type):
    direct, (flat, engine) = train_direct(), train_flat(engine_type=engine_type)
    assert len(direct.events) >= 3 and [e.grown for e in direct.events] == [e.grown for e in flat.events]
    if engine_type is FlatEngine:  # one unit parameter straddles the two partitions
        assert any(len({id(s.flat) for s in engine.shares() if s.param is p}) == 2 for p in engine.params)
    for name, layer in direct.layers.items():
        torch.testing.assert_close(flat.layers[name].units, layer.units, rtol=0, atol=1e-12)


def test_without_the_shares_flat_copies_drift():
    """Not following the flat optimizer (the state of things before `follow_flat_optimizer`): young units get the
    flat group's bias correction and reserved units join decayed."""
    direct, (flat, _) = train_direct(), train_flat(follow=False)
    gap = max(float((flat.layers[n].units - layer.units).detach().abs().max()) for n, layer in direct.layers.items())
    assert gap > 1e-4, gap


def test_a_joining_unit_gets_initial_values_and_zero_state_in_the_master_copy():
    ctl = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    units = [layer.units for layer in ctl.layers.values()]
    initial = {name: layer.units.detach().clone() for name, layer in ctl.layers.items()}
    engine = FlatEngine(units, units[0].numel() + units[1].numel() // 2)
    ctl.follow_flat_optimizer(engine.optimizer, engine.shares)
    for step in range(12):
        x, y = toy_batch(seed=step)
        nn.functional.cross_entropy(ctl.model(x), y).backward()
        engine.step()
        for part in engine.parts:  # history on every row, reserved ones included (as Adam's L2 would leave)
            for t in engine.optimizer.state[part].values():
                if t.shape == part.shape:
                    t.add_(1.0)
        event = ctl.step(engine.optimizer)
        engine.zero_grad()
        if event is not None:
            break
    assert ctl.events
    masters = {id(p): [] for p in units}
    for share in engine.shares():
        masters[id(share.param)].append(share)
    for name, amount in ctl.events[-1].grown.items():
        layer = ctl.layers[name]
        rows = slice(layer.rank - amount, layer.rank)
        assert torch.equal(layer.units[rows], initial[name][rows])
        width = layer.units.shape[1]
        for share in masters[id(layer.units)]:
            lo, hi = max(rows.start * width, share.start), min(rows.stop * width, share.start + share.numel)
            if lo >= hi:
                continue
            at = share.offset + lo - share.start
            assert torch.equal(share.flat.detach()[at:at + hi - lo], initial[name].reshape(-1)[lo:hi])
            for t in engine.optimizer.state[share.flat].values():
                if t.shape == share.flat.shape:
                    assert torch.count_nonzero(t[at:at + hi - lo]) == 0
        waiting = layer.units.reshape(-1)[layer.rank * width:]
        assert not torch.equal(waiting, initial[name].reshape(-1)[layer.rank * width:])  # still waiting: decayed


class ZeroLike:
    """What `triadapt.zero_shares` reads of a DeepSpeed ZeRO-1/2 optimizer: the torch optimizer it steps
    (``optimizer``) and this process's flat fp32 partitions (``single_partition_of_fp32_groups``)."""

    def __init__(self, inner):
        self.optimizer = inner
        self.single_partition_of_fp32_groups = [p for group in inner.param_groups for p in group["params"]]


def test_follow_deepspeed_follows_adam_copies_only():
    from triadapt.zero_shares import follow_deepspeed

    ctl = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    plain = torch.optim.AdamW(ctl.trainable_parameters())
    assert not follow_deepspeed(ctl, plain) and ctl.refresher._flat is None  # steps the parameters themselves
    copy = nn.Parameter(torch.zeros(8))
    assert follow_deepspeed(ctl, ZeroLike(torch.optim.AdamW([copy])))
    assert ctl.refresher._flat is not None
    other = inject(ToyModel(), TriAdaptConfig(**CONFIG))
    with pytest.warns(UserWarning, match="SGD steps DeepSpeed's copies: grown units keep their matrix's"):
        assert not follow_deepspeed(other, ZeroLike(torch.optim.SGD([copy], lr=0.1, momentum=0.9)))
    assert other.refresher._flat is None
