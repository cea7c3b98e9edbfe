"""Plugins: inline registration, real entry points, error barriers, duplicates, observers."""

import textwrap

import pytest
import torch

from triadapt import PluginError, Registry, ScorerSpec, StructureSpec, TriAdaptConfig, hookimpl, inject
from triadapt.plugins.registry import use_registry
from triadapt.scorers import Scorer
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel


class RankScorer(Scorer):
    """Prefers the lowest current rank: a tiny, deterministic strategy for tests."""

    name = "lowest-rank"
    calls = 0

    def scores(self, layers):
        RankScorer.calls += 1
        return {name: -float(layer.rank) for name, layer in layers.items()}


class InlinePlugin:
    @hookimpl
    def triadapt_scorers(self):
        return [ScorerSpec("lowest-rank", lambda cfg: RankScorer())]


def config(**kw):
    return TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=1, growth_interval=1, total_steps=9,
                          ref_rank=2, max_rank=4, seed=0, **kw)


def test_inline_scorer_used_by_name(register_plugin):
    register_plugin(InlinePlugin(), name="inline")
    RankScorer.calls = 0
    ctl = inject(ToyModel(), config(scorer="lowest-rank", threshold="fixed", fixed_k=1))
    train(ctl, 9)
    assert RankScorer.calls == len(ctl.events) > 0
    assert set(ctl.ranks.values()) == {2}  # always the lowest rank first: growth spreads evenly


def write_distribution(site, dist, module, body, entry_name=None):
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[triadapt]\n{entry_name or module} = {module}\n")


GOOD = """
    from triadapt import ScorerSpec, hookimpl
    from triadapt.scorers import FrobeniusScorer

    @hookimpl
    def triadapt_scorers():
        return [ScorerSpec("{name}", lambda cfg: FrobeniusScorer("{name}", "r"))]
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugin_discovered_and_used(site):
    write_distribution(site, "triadapt-demo-scorer", "demo_scorer", GOOD.format(name="demo"))
    registry = Registry(entry_points=True)
    use_registry(registry)
    info = {p.name: p for p in registry.plugins()}["demo_scorer"]
    assert (info.distribution, info.version, info.strategies, info.error) == (
        "triadapt-demo-scorer", "1.2.3", {"scorer": ["demo"]}, None)
    ctl = inject(ToyModel(), config(scorer="demo"))
    train(ctl, 9)
    assert ctl.events


def test_broken_plugin_reported_not_fatal_and_fatal_when_strict(site):
    write_distribution(site, "triadapt-broken", "broken_plugin", "raise ImportError('needs libfoo')\n")
    registry = Registry(entry_points=True)
    failed = {p.name: p for p in registry.plugins()}["broken_plugin"]
    assert failed.distribution == "triadapt-broken" and "ImportError: needs libfoo" in failed.error
    assert "fnorm" in registry.names("scorer")  # the host keeps working
    with pytest.raises(PluginError, match="plugin 'broken_plugin' from distribution 'triadapt-broken' failed"):
        Registry(entry_points=True, strict=True)


def test_strict_switch_from_environment(site, monkeypatch):
    write_distribution(site, "triadapt-broken", "broken_plugin", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("TRIADAPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="boom"):
        Registry(entry_points=True)


def test_duplicate_name_names_both_distributions(site):
    write_distribution(site, "triadapt-one", "plugin_one", GOOD.format(name="same"))
    write_distribution(site, "triadapt-two", "plugin_two", GOOD.format(name="same"))
    registry = Registry(entry_points=True)
    with pytest.raises(PluginError, match="scorer name 'same' is provided twice.*'triadapt-one'.*'triadapt-two'"):
        registry.names("scorer")


def test_misspelt_hook_is_reported(site):
    body = "from triadapt import hookimpl\n\n@hookimpl\ndef triadapt_scorer():\n    return []\n"
    write_distribution(site, "triadapt-typo", "typo_plugin", body)
    registry = Registry(entry_points=True)
    failed = {p.name: p for p in registry.plugins()}["typo_plugin"]
    assert "triadapt_scorer" in failed.error
    assert "typo_plugin" not in {impl.plugin_name for impl in registry.pm.hook.triadapt_scorers.get_hookimpls()}


def test_hook_that_raises_is_isolated(register_plugin, bare_registry):
    class Raising:
        @hookimpl
        def triadapt_thresholds(self):
            raise RuntimeError("bad table")

    register_plugin(Raising(), name="raising")
    assert "linear" in bare_registry.names("threshold")
    assert "bad table" in {p.name: p for p in bare_registry.plugins()}["raising"].error


def test_wrong_spec_type_is_reported(register_plugin, bare_registry):
    class Wrong:
        @hookimpl
        def triadapt_scorers(self):
            return [("name", "not a spec")]

    register_plugin(Wrong(), name="wrong")
    assert "expected ScorerSpec" in {p.name: p for p in bare_registry.plugins()}["wrong"].error


def test_growth_observer_sees_every_event(register_plugin):
    seen = []

    class Observer:
        @hookimpl
        def triadapt_growth_event(self, event, ranks, context):
            seen.append((event.step, sum(ranks.values()), context["total_rank"]))

    register_plugin(Observer(), name="observer")
    ctl = inject(ToyModel(), config())
    train(ctl, 9)
    assert [s for s, _, _ in seen] == [e.step for e in ctl.events] and seen
    assert all(total == ctx_total for _, total, ctx_total in seen)


def test_selection_by_name_not_hook_order(register_plugin, bare_registry):
    class Other:
        @hookimpl(tryfirst=True)
        def triadapt_scorers(self):
            return [ScorerSpec("other", lambda cfg: RankScorer())]

    register_plugin(Other(), name="other")
    ctl = inject(ToyModel(), config(scorer="fnorm"))
    assert ctl.allocator.scorer.name == "fnorm"
    assert torch.is_tensor(ctl.orthogonal_loss())


class DiagonalStructure:
    """ΔW = B diag(s) A: a third-party structure with its own unit parameters (a, b, s)."""

    name = "diagonal"

    def unit_shapes(self, index, in_features, out_features):
        return {"a": (in_features,), "b": (out_features,), "s": (1,)}

    def assemble(self, units):
        from triadapt.structures import Factors

        down = torch.stack([u["a"] for u in units])  # (r, n)
        up = torch.stack([u["b"] for u in units], dim=1)  # (d, r)
        return Factors(down=down, up=up, core=torch.diag(torch.cat([u["s"] for u in units])))  # (r, r)


class StructurePlugin:
    @hookimpl
    def triadapt_structures(self):
        from triadapt.structures import Structure

        cls = type("Diagonal", (DiagonalStructure, Structure), {})
        return [StructureSpec("diagonal", lambda cfg: cls())]


@pytest.fixture
def with_diagonal(register_plugin):
    register_plugin(StructurePlugin(), name="diagonal-plugin")


from triadapt.testing.conformance import StructureConformance  # noqa: E402


@pytest.mark.usefixtures("with_diagonal")
class TestInlineStructureConformance(StructureConformance):
    structure = "diagonal"


def test_inline_structure_trains_by_name(with_diagonal):
    ctl = inject(ToyModel(), config(structure="diagonal"))
    losses = train(ctl, 9)
    assert ctl.events and losses[-1] < losses[0]
    assert "s" in ctl.layers["blocks.0.query"].unit(0)


class GradientCounter(RankScorer):
    """Records, per step, whether it saw gradients of the active units (a gradient-reading scorer)."""

    name = "gradient-counter"
    observes_steps = True

    def __init__(self):
        self.seen = []

    def observe(self, layers, step):
        from triadapt.gradients import full_grad

        grads = [full_grad(layer.units) for layer in layers.values()]
        self.seen.append((step, all(g is not None and bool(g[: layer.rank].any())
                                    for g, layer in zip(grads, layers.values()))))


class GradientPlugin:
    @hookimpl
    def triadapt_scorers(self):
        return [ScorerSpec("gradient-counter", lambda cfg: GradientCounter())]


@pytest.mark.parametrize("before_step", [True, False])
def test_gradient_scorer_observes_once_per_step_with_gradients(register_plugin, before_step):
    """observe_gradients() before optimizer.step() (the runner), or only step() after it (a plain loop)."""
    from triadapt.testing.models import toy_batch

    register_plugin(GradientPlugin(), name="gradients")
    model = ToyModel()
    ctl = inject(model, config(scorer="gradient-counter", threshold="fixed", fixed_k=1))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
    x, y = toy_batch()
    for _ in range(4):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if before_step:
            ctl.observe_gradients()
            ctl.observe_gradients()  # a second call in the same step is ignored
        optimizer.step()
        ctl.step()
        optimizer.zero_grad(set_to_none=True)
    assert ctl.allocator.scorer.seen == [(1, True), (2, True), (3, True), (4, True)]
