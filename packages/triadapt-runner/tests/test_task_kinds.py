"""Task kinds own what depends on them: one object per kind string, asked instead of tested by name."""

import ast
from pathlib import Path

import pytest

import triadapt_runner
from triadapt_runner.tasks.registry import KINDS, custom_kinds, kind_for, main_metric, reported_metrics
from triadapt_runner.tasks.specs import TASKS

KIND_NAMES = {"single", "pair", "regression", "qa", "sft", "lm"}
SOURCE = Path(triadapt_runner.__file__).parent


def kind_name_comparisons(tree: ast.AST) -> list[int]:
    """Lines of comparisons with a kind name: ``x == "sft"``, ``x in ("sft", "lm")``, ``"qa" != x``."""
    def names(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in KIND_NAMES
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(isinstance(e, ast.Constant) and e.value in KIND_NAMES for e in node.elts)
        return False

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and any(names(n) for n in [node.left, *node.comparators])]


def test_the_scan_finds_what_it_looks_for():
    found = kind_name_comparisons(ast.parse('a = k == "sft"\nb = k in ("x", "lm")\nc = "qa" != k\nd = k == "zip"\n'))
    assert found == [1, 2, 3]


def test_no_code_outside_the_task_modules_compares_a_kind_by_its_name():
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE)
        if relative.parts[0] == "tasks":
            continue
        offenders += [f"{relative}:{line}" for line in kind_name_comparisons(ast.parse(path.read_text()))]
    assert offenders == []


def test_one_kind_object_per_kind_string():
    assert set(KINDS) == KIND_NAMES and all(kind.key == key for key, kind in KINDS.items())
    assert len({id(kind) for kind in KINDS.values()}) == len(KINDS)
    assert custom_kinds() == ("single", "pair", "regression", "sft", "lm")  # QA reads SQuAD files via its tasks
    assert {task.kind for task in TASKS.values()} <= set(KINDS)


@pytest.mark.parametrize("kind,minimised,maximised", [
    ("sft", ["loss", "perplexity"], []),
    ("lm", ["loss", "perplexity"], []),
    ("single", [], ["accuracy", "f1", "macro_f1"]),
    ("regression", [], ["pearson", "spearman"]),
    ("qa", [], ["exact", "f1", "HasAns_f1"]),
])
def test_metric_direction_is_the_kinds(kind, minimised, maximised):
    for metric in minimised:
        assert KINDS[kind].lower_is_better(metric) and KINDS[kind].better(metric, 1.1, 1.2)
    for metric in maximised:
        assert not KINDS[kind].lower_is_better(metric) and KINDS[kind].better(metric, 0.8, 0.7)


def test_main_metric_of_custom_data_follows_its_kind():
    assert [main_metric("custom", k) for k in ("single", "pair", "regression", "sft", "lm")] == \
        ["accuracy", "accuracy", "pearson", "perplexity", "perplexity"]
    assert main_metric("cola", "single") == "matthews"  # a built-in task's own, whatever data.kind says
    assert reported_metrics("squad_v2", "single") == ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
                                                      "NoAns_f1")
    assert reported_metrics("custom", "regression") == ("pearson", "spearman")


def test_the_tasks_listing_names_each_kind(capsys):
    from conftest import run_main

    assert run_main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, task in TASKS.items():
        line = next(x for x in lines if x.startswith(f"  {name} "))
        assert line.split()[1] == kind_for(task).label == task.kind


def test_the_0_1_kind_questions_still_answer_with_a_deprecation_warning():
    import pytest

    from triadapt_runner.tasks.specs import TASKS

    with pytest.warns(DeprecationWarning, match=r"TaskSpec.lower_is_better is deprecated .*registry.kind_for\(task\)"):
        assert TASKS["rotten_tomatoes_sft"].lower_is_better and not TASKS["sst2"].lower_is_better
    with pytest.warns(DeprecationWarning, match=r"TaskSpec.is_qa is deprecated"):
        assert TASKS["squad"].is_qa
    with pytest.warns(DeprecationWarning):
        assert TASKS["stsb"].is_regression and TASKS["rotten_tomatoes_sft"].is_causal_lm
    with pytest.warns(DeprecationWarning, match=r"TaskSpec.better is deprecated"):
        assert TASKS["rotten_tomatoes_sft"].better(1.0, 2.0) and TASKS["sst2"].better(0.9, 0.8)
