"""benchmarks/quality/make_results.py: docs/results.md's values come from the stores, and its helpers' formulas hold."""

import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

QUALITY = Path(__file__).resolve().parents[3] / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import make_results  # noqa: E402
from results_drug_reviews import on_majority_class  # noqa: E402
from results_earlier import Row  # noqa: E402
from results_store import lr_text, p_text  # noqa: E402


def test_the_pages_match_what_the_stores_give():
    """What CI checks: every marked value of docs/results.md and README.md is what the committed stores give."""
    done = subprocess.run([sys.executable, str(QUALITY / "make_results.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "docs/results.md: " in done.stdout and "marked values match the stores" in done.stdout


@pytest.mark.parametrize("values", [[0.654, 0.691, 0.654], [0.7625, 0.7, 0.7125], [1.2015, 1.2227, 1.2131]])
def test_three_values_come_back_from_mean_std_and_median(values):
    row = Row(statistics.fmean(values), statistics.stdev(values), statistics.median(values), 3, {})
    assert row.three() == pytest.approx(sorted(values), abs=1e-12)


def test_a_constant_prediction_is_told_by_its_macro_f1():
    """248 of 379 reviews in the majority class: predicting it for all gives F1 2·248/(379+248) for that class and 0
    for the two others (hand-computed: 496/627/3 = 0.263690...)."""
    constant = SimpleNamespace(data=SimpleNamespace(metrics={"result_accuracy": 248 / 379,
                                                             "result_macro_f1": 496 / 627 / 3}))
    learned = SimpleNamespace(data=SimpleNamespace(metrics={"result_accuracy": 248 / 379, "result_macro_f1": 0.41}))
    assert on_majority_class(constant) and not on_majority_class(learned)


def test_numbers_are_written_as_the_page_writes_them():
    assert [p_text(p) for p in (0.023, 0.8, 0.1, 0.9996, 0.00012)] == ["0.023", "0.80", "0.10", "1.0", "0.00012"]
    assert [lr_text(v) for v in (1e-4, 5e-4, 2.5e-3, 1e-3)] == ["1e-4", "5e-4", "2.5e-3", "1e-3"]


def test_a_marker_no_generator_gives_is_one_line(tmp_path):
    page = make_results.ROOT / "docs" / "results.md"
    text = "a <!-- results:no.such-key -->1<!-- /results --> b"
    with pytest.raises(SystemExit, match="markers no generator gives: no.such-key"):
        make_results.render(page, text, {})
    filled = make_results.render(page, "x <!-- results:k -->old<!-- /results -->\n<!-- results:t -->\n\n"
                                       "<!-- /results -->", {"k": "new", "t": "| a |"})
    assert filled == "x <!-- results:k -->new<!-- /results -->\n<!-- results:t -->\n\n| a |\n\n<!-- /results -->"


def test_final_ranks_are_averaged_per_kind_of_matrix():
    """Two layers: each kind's mean over them (hand-computed), the attention output apart from the FFN output."""
    from results_rotten_tomatoes import MATRIX_KINDS, by_kind

    names = list(MATRIX_KINDS)
    ranks = {f"bert.encoder.layer.{layer}.{kind}": 2 * i + layer * 3 for layer in (0, 1) for i, kind in
             enumerate(names)}
    assert by_kind(ranks) == {"query": 1.5, "key": 3.5, "value": 5.5, "attn. output": 7.5, "FFN in": 9.5,
                              "FFN out": 11.5}


def test_a_value_no_page_shows_is_named():
    """A generator that gives a key no page marks (a finished grid whose section is not written) stops the script."""
    pages = ["a <!-- results:k -->1<!-- /results -->", "<!-- results:t -->\n\n| a |\n\n<!-- /results -->"]
    assert make_results.not_shown({"k": "1", "t": "| a |"}, pages) == []
    assert make_results.not_shown({"k": "1", "t": "| a |", "rt.figures": "| b |"}, pages) == ["rt.figures"]


def test_smollm2_perplexities_are_given_back_from_the_negated_selection_scores():
    """selection.json keeps scores to maximise, so a perplexity is stored negated: the page shows it positive again,
    in the grid's order of rates, and a difference with its sign."""
    from results_smollm2 import ppl, selection_cell

    scores = {repr(2.5e-3): -1.3, repr(1e-4): -1.25, repr(1e-3): -1.2015}  # in the order the seed-0 cells finished
    grid = SimpleNamespace(selection=lambda: {"peft LoRA": {"scores": scores, "chosen": 1e-3}},
                           select_values=lambda: [1e-4, 1e-3, 2.5e-3])
    assert selection_cell(grid, "peft LoRA") == "1.2500 / 1.2015 / 1.3000 → 1e-3"
    assert (ppl(0.0181, True), ppl(-0.0007, True)) == ("+0.0181", "\u22120.0007")


def test_a_grid_without_a_store_has_finished_none_of_its_cells():
    """Before its first cell the SmolLM2 rerun has no archive: its progress is 0 of what its spec plans (3 rows × 5
    rates at seed 0, then 2 more seeds each: 21)."""
    from results_smollm2 import values

    assert values(None) == {"sft.progress": "0 of its 21 cells"}
