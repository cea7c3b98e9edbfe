"""Conformance suites every strategy must pass, built-ins included.

Adopt one by subclassing and naming your strategy::

    from triadapt.testing.conformance import ScorerConformance

    class TestSpectralScorer(ScorerConformance):
        scorer = "spectral"

The suites look strategies up in the process-wide registry, so an installed plugin is
found through its entry point.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from triadapt.config import TriAdaptConfig
from triadapt.controller import Controller, inject
from triadapt.plugins.registry import registry
from triadapt.testing.models import ToyModel, toy_batch
from triadapt.thresholds import GrowthContext

STRUCTURES = ("triangular", "lora")


def make_controller(**overrides) -> Controller:
    settings = dict(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2, total_steps=20,
                    ref_rank=3, max_rank=5, rank_increment=1, seed=0, orth_reg_weight=0.0)
    settings.update(overrides)
    return inject(ToyModel(), TriAdaptConfig(**settings))


def train(ctl: Controller, steps: int, lr: float = 1e-2) -> list[float]:
    """A few AdamW steps on a fixed toy batch; returns the losses."""
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=lr)
    ctl.attach(optimizer)
    x, y = toy_batch()
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(ctl.model(x), y) + ctl.orthogonal_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    ctl.detach()
    return losses


class ScorerConformance:
    """A scorer gives one finite score per matrix, deterministically, with both structures."""

    scorer: str = ""

    @pytest.fixture(params=STRUCTURES)
    def controller(self, request) -> Controller:
        return make_controller(scorer=self.scorer, structure=request.param)

    def test_registered(self):
        assert self.scorer in registry().names("scorer")

    def test_one_finite_score_per_matrix(self, controller):
        train(controller, 3)
        scores = controller.allocator.scorer.scores(controller.layers)
        assert set(scores) == set(controller.layers)
        assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())

    def test_deterministic(self):
        a, b = make_controller(scorer=self.scorer), make_controller(scorer=self.scorer)
        train(a, 3)
        train(b, 3)
        assert a.allocator.scorer.scores(a.layers) == b.allocator.scorer.scores(b.layers)

    def test_state_round_trips_through_torch_save(self):
        a, b = make_controller(scorer=self.scorer), make_controller(scorer=self.scorer)
        train(a, 3)
        train(b, 3)
        buffer = io.BytesIO()
        torch.save(a.allocator.scorer.state_dict(), buffer)
        buffer.seek(0)
        b.allocator.scorer.load_state_dict(torch.load(buffer, weights_only=True))
        assert a.allocator.scorer.scores(a.layers) == b.allocator.scorer.scores(b.layers)

    def test_drives_growth_within_budget(self, controller):
        train(controller, 20)
        assert controller.events, "no growth event happened"
        assert controller.allocator.total_rank() <= controller.allocator.initial_budget


class ThresholdConformance:
    """A threshold returns a non-negative integer and keeps every run within budget."""

    threshold: str = ""
    overrides: dict = {}

    def config(self, **extra) -> dict:
        return {"threshold": self.threshold, **self.overrides, **extra}

    def test_registered(self):
        assert self.threshold in registry().names("threshold")

    @pytest.mark.parametrize("step", [3, 5, 10, 20])
    @pytest.mark.parametrize("remaining", [1, 2, 7, 40])
    def test_count_is_a_non_negative_int(self, step, remaining):
        ctl = make_controller(**self.config())
        ctx = GrowthContext(step=step, warmup_steps=2, total_steps=20, remaining_budget=remaining,
                            initial_budget=40, growable=8)
        k = ctl.allocator.threshold.count(ctx)
        assert isinstance(k, int) and k >= 0

    @pytest.mark.parametrize("structure", STRUCTURES)
    def test_full_run_stays_within_budget(self, structure):
        ctl = make_controller(structure=structure, **self.config())
        train(ctl, 20)
        assert ctl.allocator.total_rank() <= ctl.allocator.initial_budget
        assert all(layer.rank <= layer.capacity for layer in ctl.layers.values())
        for event in ctl.events:
            assert sum(event.grown.values()) <= event.budget_before


class StructureConformance:
    """A structure's forward, ΔW, export factors, gradients and merge agree with each other."""

    structure: str = ""

    def test_registered(self):
        assert self.structure in registry().names("structure")

    def test_update_is_zero_at_start(self):
        ctl = make_controller(structure=self.structure)
        for layer in ctl.layers.values():
            assert torch.count_nonzero(layer.delta_weight()) == 0

    @pytest.mark.parametrize("rank", [1, 3, 5])
    def test_forward_equals_delta_weight(self, rank):
        ctl = make_controller(structure=self.structure)
        train(ctl, 2)
        x = torch.randn(4, 8)
        for layer in ctl.layers.values():
            layer.set_rank(rank)
            if layer.in_features != 8:
                continue
            expected = layer.base_layer(x) + x @ layer.delta_weight().T
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)

    def test_unit_shapes_assemble_to_rank(self):
        ctl = make_controller(structure=self.structure)
        for layer in ctl.layers.values():
            layer.set_rank(4)
            f = layer.factors()
            assert f.down.shape == (4, layer.in_features) and f.up.shape == (layer.out_features, 4)
            torch.testing.assert_close(f.up_with_core() @ f.down, f.delta_weight())

    def test_only_active_units_get_gradients(self):
        ctl = make_controller(structure=self.structure)
        x, y = toy_batch()
        torch.nn.functional.cross_entropy(ctl.model(x), y).backward()
        for layer in ctl.layers.values():
            grad = layer.units.grad
            for i in range(layer.capacity):
                grads = layer.unit(i, grad)
                assert any(bool(g.any()) for g in grads.values()) == (i < layer.rank), f"unit {i}"

    def test_merge_unmerge_round_trip(self):
        ctl = make_controller(structure=self.structure)
        train(ctl, 3)
        x = toy_batch()[0]
        ctl.model.eval()
        before = ctl.model(x)
        ctl.merge()
        torch.testing.assert_close(ctl.model(x), before, rtol=1e-5, atol=1e-5)
        ctl.unmerge()
        torch.testing.assert_close(ctl.model(x), before, rtol=1e-5, atol=1e-5)
