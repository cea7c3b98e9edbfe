"""Static storage vs an oracle that appends real new tensors to AdamW at each growth.

The oracle is what the paper describes (Eq. 6-9): at a growth by g of a matrix at rank r0 it
creates A_new (g×n), B_new (d×g), L_down (g×r0), L_aug (g×g, lower), U_up (r0×g), U_aug (g×g,
upper) as new parameters and registers them with the optimizer (fresh moments and step
count), while old tensors keep their state. Static storage must match it to 1e-6.
Both run in float64 so that the comparison measures semantics, not float32 rounding (Adam's
normalisation amplifies last-bit differences of near-zero gradients).
"""

import copy

import pytest
import torch
from torch import nn

from triadapt import TriAdaptConfig, inject
from triadapt.testing.models import ToyModel, toy_batch
from triadapt.young_rows import young_runs


class OracleLinear(nn.Module):
    """ΔW = B(L+U)A assembled from blocks that are appended at each growth."""

    def __init__(self, base, snapshot, alpha, eps, triangular):
        super().__init__()
        self.base, self.snapshot, self.alpha, self.eps, self.triangular = base, snapshot, alpha, eps, triangular
        self.blocks = []  # (r0, g, dict of Parameters)
        self.rank = 0

    def grow(self, g):
        r0, units = self.rank, self.snapshot[self.rank:self.rank + g]
        block = {"A": torch.stack([u["a"] for u in units]), "B": torch.stack([u["b"] for u in units], 1)}
        if self.triangular:
            block["L_down"] = torch.stack([u["l"][:r0] for u in units]) if r0 else torch.zeros(g, 0)
            block["U_up"] = torch.stack([u["u"][:r0] for u in units], 1) if r0 else torch.zeros(0, g)
            block["L_aug"], block["U_aug"] = torch.zeros(g, g), torch.zeros(g, g)
            for j, u in enumerate(units):
                block["L_aug"][j, : j + 1] = u["l"][r0:]
                block["U_aug"][: j + 1, j] = u["u"][r0:]
        params = {k: nn.Parameter(v.clone()) for k, v in block.items()}
        self.blocks.append((r0, g, params))
        self.rank += g
        return [p for p in params.values() if p.numel()]

    def factors(self):
        r = self.rank
        A = torch.cat([p["A"] for _, _, p in self.blocks])  # (r, n)
        B = torch.cat([p["B"] for _, _, p in self.blocks], 1)  # (d, r)
        if not self.triangular:
            return A, B, torch.eye(r)
        L, U = torch.zeros(r, r), torch.zeros(r, r)
        for r0, g, p in self.blocks:
            L = L.index_put((torch.arange(r0, r0 + g)[:, None], torch.arange(r0)[None, :]), p["L_down"])
            L = L.index_put((torch.arange(r0, r0 + g)[:, None], torch.arange(r0, r0 + g)[None, :]),
                            torch.tril(p["L_aug"]))
            U = U.index_put((torch.arange(r0)[:, None], torch.arange(r0, r0 + g)[None, :]), p["U_up"])
            U = U.index_put((torch.arange(r0, r0 + g)[:, None], torch.arange(r0, r0 + g)[None, :]),
                            torch.triu(p["U_aug"]))
        return A, B, L + U

    def forward(self, x):
        A, B, D = self.factors()
        return self.base(x) + self.alpha / (self.rank + self.eps) * (x @ (B @ D @ A).T)


pytestmark = pytest.mark.usefixtures("float64")


def build_pair(structure, increment, seed=0):
    config = TriAdaptConfig(structure=structure, target_modules=ToyModel.targets, warmup_steps=3,
                            growth_interval=3, total_steps=24, ref_rank=4, max_rank=7, init_rank=1,
                            rank_increment=increment, seed=seed, orth_reg_weight=0.0)
    oracle_model = ToyModel()
    ctl = inject(ToyModel(), config)
    oracles = {}
    for name, layer in ctl.layers.items():
        snapshot = [{k: v.detach().clone() for k, v in layer.unit(i).items()} for i in range(layer.capacity)]
        base = copy.deepcopy(layer.base_layer)
        oracle = OracleLinear(base, snapshot, config.lora_alpha, config.eps, structure == "triangular")
        parent, _, child = name.rpartition(".")
        setattr(oracle_model.get_submodule(parent), child, oracle)
        oracles[name] = oracle
    for p in oracle_model.parameters():
        p.requires_grad_(False)
    oracle_model.classifier.load_state_dict(ctl.model.classifier.state_dict())
    oracle_model.classifier.requires_grad_(True)
    return ctl, oracle_model, oracles


@pytest.mark.parametrize("structure", ["triangular", "lora"])
@pytest.mark.parametrize("increment", [1, 2])
@pytest.mark.parametrize("implementation", [{"foreach": False}, {"foreach": True}, {"fused": True},
                                            {"foreach": True, "amsgrad": True, "adam": True}],
                         ids=["for-loop", "foreach", "fused", "adam-l2-amsgrad"])
def test_static_storage_matches_appending_oracle(structure, increment, implementation):
    implementation = dict(implementation)
    kind = torch.optim.Adam if implementation.pop("adam", False) else torch.optim.AdamW
    run_against_oracle(structure, increment, kind, dict(lr=2e-2, weight_decay=0.05, betas=(0.9, 0.999),
                                                        **implementation))


def test_oracle_holds_when_the_optimizer_state_is_reloaded_mid_run():
    """A reload (new moment tensors, as on resume) between events: the correction follows the new tensors."""
    run_against_oracle("triangular", 1, torch.optim.AdamW, dict(lr=2e-2, weight_decay=0.05), reload_at=(8, 13))


def run_against_oracle(structure, increment, kind, hyper, reload_at=()):
    ctl, oracle_model, oracles = build_pair(structure, increment)
    opt_static = kind(list(ctl.trainable_parameters()), **hyper)
    ctl.attach(opt_static)
    initial = [p for o in oracles.values() for p in o.grow(1)]
    opt_oracle = kind(initial + list(oracle_model.classifier.parameters()), **hyper)

    for step in range(24):
        if step in reload_at:
            opt_static.load_state_dict(copy.deepcopy(opt_static.state_dict()))
        x, y = toy_batch(seed=step)
        loss_s = nn.functional.cross_entropy(ctl.model(x), y)
        loss_o = nn.functional.cross_entropy(oracle_model(x), y)
        torch.testing.assert_close(loss_s, loss_o, rtol=0, atol=1e-6)
        loss_s.backward()
        loss_o.backward()
        opt_static.step()  # the attached controller may grow here
        opt_oracle.step()
        opt_static.zero_grad()
        opt_oracle.zero_grad()
        if ctl.events and ctl.events[-1].step == step + 1:
            for name, amount in ctl.events[-1].grown.items():
                opt_oracle.add_param_group({"params": oracles[name].grow(amount)})

    assert len(ctl.events) >= 3, "the schedule must contain several growth events"
    assert len(set(ctl.ranks.values())) > 1, "ranks should end unequal"
    for name, layer in ctl.layers.items():
        assert layer.rank == oracles[name].rank
        A, B, D = oracles[name].factors()
        f = layer.factors()
        torch.testing.assert_close(f.down, A, rtol=0, atol=1e-6)
        torch.testing.assert_close(f.up, B, rtol=0, atol=1e-6)
        if f.core is not None:
            torch.testing.assert_close(f.core, D, rtol=0, atol=1e-6)
    x = toy_batch(seed=99)[0]
    torch.testing.assert_close(ctl.model(x), oracle_model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("optimizer", [
    lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.5),
    lambda params: torch.optim.Adam(params, lr=0.1, weight_decay=0.5),  # L2 through the gradient
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.5),
], ids=["adamw", "adam-l2", "sgd-momentum"])
def test_joining_units_start_from_initial_values_without_history(optimizer):
    """Whatever the optimizer did to a reserved row while it waited, the unit joins as created then."""
    ctl, _, _ = build_pair("triangular", 1)
    initial = {n: l.units.detach().clone() for n, l in ctl.layers.items()}
    opt = optimizer(list(ctl.trainable_parameters()))
    ctl.attach(opt)
    for step in range(12):  # until the first growth event
        x, y = toy_batch(seed=step)
        nn.functional.cross_entropy(ctl.model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if ctl.events:
            break
    assert ctl.events and ctl.events[-1].step == step + 1
    for name, amount in ctl.events[-1].grown.items():
        layer = ctl.layers[name]
        joined = slice(layer.rank - amount, layer.rank)
        assert torch.equal(layer.units[joined], initial[name][joined])
        state = [t for t in opt.state[layer.units].values() if t.shape == layer.units.shape]
        assert state and all(torch.count_nonzero(t[joined]) == 0 for t in state)
        assert not torch.equal(layer.units[layer.rank:], initial[name][layer.rank:])  # still waiting: decayed


def test_reserved_rows_decay_while_waiting_and_reset_when_joining_without_the_optimizer():
    """``ctl.step()`` without the optimizer still resets a joining unit's values (its state is not reachable)."""
    ctl, _, _ = build_pair("triangular", 1)
    initial = {n: l.units.detach().clone() for n, l in ctl.layers.items()}
    opt = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=0.1, weight_decay=0.5)
    for step in range(12):  # until the first growth event
        x, y = toy_batch(seed=step)
        nn.functional.cross_entropy(ctl.model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if ctl.step() is not None:
            break
    layer_name, amount = next(iter(ctl.events[-1].grown.items()))
    layer = ctl.layers[layer_name]
    waited = (1 - 0.1 * 0.5) ** (step + 1)
    torch.testing.assert_close(layer.units[layer.rank:], initial[layer_name][layer.rank:] * waited)
    assert torch.equal(layer.units[layer.rank - amount:layer.rank], initial[layer_name][layer.rank - amount:layer.rank])


def units_after_steps(ctl, opt, steps):
    """Train ``steps`` steps on toy batches without the controller's refresh; the units after them (copies)."""
    for step in range(steps):
        x, y = toy_batch(seed=step)
        nn.functional.cross_entropy(ctl.model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return {name: layer.units.detach().clone() for name, layer in ctl.layers.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [False, True])
def test_bias_correction_touches_young_rows_only(dtype, fused):
    """The correction of young rows leaves every other row bitwise unchanged (float32 too)."""
    torch.set_default_dtype(dtype)
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, init_rank=2, ref_rank=4, max_rank=8,
                                            seed=0, threshold="none"))
    for layer in ctl.layers.values():
        layer.grow(2, step=1)  # rows 2, 3 joined after step 1: at step 3 their age is 2, the parameter's 3
        layer.set_rank(5)  # row 4 active as if from the start (not young) ...
        layer.grow(1, step=2)  # ... between young rows: row 5 joined after step 2 (two runs of young rows)
    opt = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2, weight_decay=0.01, fused=fused)
    before = units_after_steps(ctl, opt, 3)
    ctl.refresher(opt, 3)
    for name, layer in ctl.layers.items():
        assert torch.equal(layer.units[:2], before[name][:2]) and torch.equal(layer.units[4], before[name][4])
        assert torch.equal(layer.units[6:], before[name][6:]) and layer.units[6:].shape[0] == 2  # reserved rows
        for row in (2, 3, 5):
            assert not torch.equal(layer.units[row], before[name][row]), row


def test_bias_correction_when_only_matrices_of_one_width_have_young_rows():
    """Unit rows of two widths (query/value 8→8, up/down 8↔16). After a resume with a fresh optimizer at
    step 10, the units query/value grew after step 1 are as old as the optimizer's state (not young), those
    up/down grew after step 11 (the first after the resume) are young: each width is handled on its own, and
    the matrices without young rows stay bitwise unchanged (a width without any young row failed before)."""
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, init_rank=2, ref_rank=4, max_rank=8,
                                            seed=0, threshold="none"))
    for name, layer in ctl.layers.items():
        layer.grow(1, step=1 if name.endswith(("query", "value")) else 11)
    assert len({layer.units.shape[1] for layer in ctl.layers.values()}) == 2
    opt = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)  # created at the resume, after step 10
    before = units_after_steps(ctl, opt, 2)
    ctl.refresher(opt, 12)  # the optimizer's step 2; units grown after step 11 are 1 step old
    for name, layer in ctl.layers.items():
        if name.endswith(("query", "value")):
            assert torch.equal(layer.units, before[name])
        else:
            assert torch.equal(layer.units[:2], before[name][:2])
            assert not torch.equal(layer.units[2], before[name][2])


@pytest.mark.parametrize("flags, runs", [
    ([], []), ([False, False], []), ([True], [(0, 1)]), ([False, True, True], [(1, 3)]),
    ([True, False, True, True, False], [(0, 1), (2, 4)]),
])
def test_young_runs_are_the_ranges_of_consecutive_young_rows(flags, runs):
    assert young_runs(flags) == runs
