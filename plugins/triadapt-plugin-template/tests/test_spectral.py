import pytest
import torch

from triadapt import StrategyOptionError, TriAdaptConfig, registry
from triadapt.testing.conformance import ScorerConformance, make_controller, train


@pytest.fixture(autouse=True)
def _entry_points(triadapt_registry):  # find "spectral" through the installed entry point
    yield


class TestSpectral(ScorerConformance):
    scorer = "spectral"


def test_equals_largest_singular_value_of_delta_w():
    ctl = make_controller(scorer="spectral")
    train(ctl, 6)
    scores = ctl.allocator.scorer.scores(ctl.layers)
    for name, layer in ctl.layers.items():
        expected = torch.linalg.matrix_norm(layer.factors().delta_weight().detach(), ord=2) / layer.rank
        assert scores[name] == pytest.approx(float(expected), rel=1e-4)


def test_option_by_rank_off_gives_the_largest_singular_value():
    ctl = make_controller(scorer="spectral", strategy_options={"spectral": {"by_rank": False}})
    train(ctl, 6)
    scores = ctl.allocator.scorer.scores(ctl.layers)
    for name, layer in ctl.layers.items():
        expected = torch.linalg.matrix_norm(layer.factors().delta_weight().detach(), ord=2)
        assert scores[name] == pytest.approx(float(expected), rel=1e-4)


def test_options_are_typed():
    assert make_controller(scorer="spectral").allocator.scorer.by_rank is True  # the default, filled in
    with pytest.raises(StrategyOptionError, match=r"strategy_options.spectral.by_rank='no' is invalid: option "
                                                  r"'by_rank' of scorer 'spectral' of plugin 'spectral' \(distribution "
                                                  r"triadapt-spectral .*\) must be bool; its options are by_rank: bool "
                                                  r"= True$"):
        TriAdaptConfig(scorer="spectral", strategy_options={"spectral": {"by_rank": "no"}})
    with pytest.raises(StrategyOptionError, match=r"strategy_options.spectral.rank=1 is invalid: .* has no option "
                                                  r"'rank'; its options are by_rank: bool = True$"):
        TriAdaptConfig(scorer="spectral", strategy_options={"spectral": {"rank": 1}})


def test_provider_is_the_distribution():
    assert registry().provider("scorer", "spectral")[0] == "triadapt-spectral"
