"""The example method plugin through the runner's method conformance suite (needs triadapt-runner: the runner's
test environment runs this file)."""

import pytest
from safetensors.torch import load_file

from triadapt_runner.testing import MethodConformance

suite = MethodConformance("linear-probe", distribution="triadapt-spectral")
with_norms = MethodConformance("linear-probe", distribution="triadapt-spectral",
                               approach_options={"train_norms": True})


def test_registered_from_its_distribution():
    suite.check_registered()


def test_plan_leaves_the_model_unchanged():
    suite.check_plan_leaves_model_unchanged()


def test_a_grid_row_that_compare_shows(tmp_path):
    run = suite.check_grid_row(tmp_path)
    assert run.data.tags["triadapt.method"] == "linear probe"
    assert run.data.metrics["trained_parameters"] == 384 * 2 + 2  # MiniLM's classifier: 384 -> 2 classes


def test_norms_option_trains_more(tmp_path):
    run = with_norms.check_grid_row(tmp_path)
    # 13 LayerNorms of 384 (embeddings + 2 per layer for 6 layers), weight and bias each, beside the head
    assert run.data.metrics["trained_parameters"] == 384 * 2 + 2 + 13 * 2 * 384


def test_saves_only_what_it_trained(tmp_path):
    suite.check_saves_what_it_trained(tmp_path)
    saved = load_file(str(next(tmp_path.rglob("probe.safetensors"))))
    assert sorted(saved) == ["classifier.bias", "classifier.weight"]


def test_resumes_exactly(tmp_path):
    suite.check_resumes_exactly(tmp_path)


def test_bad_options():
    suite.check_bad_options(({"train_norms": "yes"}, "approach_options.train_norms='yes' is invalid"))


def test_multi_process_runs_are_refused(tmp_path):
    suite.check_process_setups(tmp_path)


@pytest.mark.parametrize("name", ["triadapt", "peft-lora"])
def test_built_in_methods_pass_the_cheap_checks(name):
    MethodConformance(name, distribution="triadapt-runner").check_registered()
    MethodConformance(name).check_plan_leaves_model_unchanged()
    MethodConformance(name).check_bad_options()
