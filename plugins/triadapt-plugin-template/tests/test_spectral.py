import pytest
import torch

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
