import importlib.metadata as md

from triadapt import registry
from triadapt.testing.conformance import ScorerConformance


class TestSensitivity(ScorerConformance):
    scorer = "sensitivity"


def test_discovered_through_its_entry_point():
    info = {p.name: p for p in registry().plugins()}["sensitivity"]
    assert info.distribution == "triadapt-sensitivity" and info.error is None
    assert info.strategies == {"scorer": ["sensitivity"]}


def test_provider_is_the_distribution():
    assert registry().provider("scorer", "sensitivity") == ("triadapt-sensitivity", md.version("triadapt-sensitivity"))
