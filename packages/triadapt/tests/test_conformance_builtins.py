"""Every built-in strategy passes the conformance suite that plugins adopt."""

from triadapt.testing.conformance import ScorerConformance, StructureConformance, ThresholdConformance


class TestFnorm(ScorerConformance):
    scorer = "fnorm"


class TestFnormSqrt(ScorerConformance):
    scorer = "fnorm-sqrt"


class TestFnormRaw(ScorerConformance):
    scorer = "fnorm-raw"


class TestLinear(ThresholdConformance):
    threshold = "linear"


class TestNonlinear(ThresholdConformance):
    threshold = "nonlinear"


class TestFixed(ThresholdConformance):
    threshold = "fixed"
    overrides = {"fixed_k": 2}


class TestNone(ThresholdConformance):
    threshold = "none"


class TestTriangular(StructureConformance):
    structure = "triangular"


class TestLora(StructureConformance):
    structure = "lora"
