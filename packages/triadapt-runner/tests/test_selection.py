"""Choosing the learning rate per row on validation, the same protocol for every row."""

import json

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, assert_bad_input, run_main, write_yaml
from triadapt_runner.errors import RunnerError
from triadapt_runner.grid.choosing import apply_selection
from triadapt_runner.grid.selection import Selection, choose, edge
from triadapt_runner.grid.spec import parse_grid
from triadapt_runner.tracking.runs import Tracker

SELECT = Selection("train.learning_rate", (1e-4, 5e-4, 2.5e-3), (0, 1))


def test_choose_by_mean_of_the_selection_seeds():
    scores = {"a": {1e-4: [0.60, 0.62], 5e-4: [0.70, 0.66], 2.5e-3: [0.71, 0.64]},  # means .61, .68, .675
              "b": {1e-4: [0.5, 0.5], 5e-4: [0.5, 0.5]},  # a tie: the first value listed
              "c": {}}
    assert choose(SELECT, scores) == {"a": 5e-4, "b": 1e-4}


def test_a_choice_at_an_end_of_a_numeric_axis_is_an_edge():
    """The best value may lie beyond the grid: said for the largest or smallest of numbers, never for an inner value
    or an axis of other values."""
    values = (1e-4, 5e-4, 2.5e-3)
    assert [edge(values, v) for v in values] == ["bottom", None, "top"]
    assert edge((5e-3, 1e-4, 1e-3), 5e-3) == "top" and edge((5e-3, 1e-4, 1e-3), 1e-4) == "bottom"  # any order
    assert edge(("linear", "nonlinear"), "linear") is None and edge((True, False), True) is None
    assert edge((0, 1), True) is None and edge((0, 1), None) is None  # True == 1, but it is not a value listed
    assert edge((8, 16), 16) == "top"  # two values: every choice is an end


GRID = {"name": "lr", "experiment": "lr", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"zip": {"method": ["TriAdaptLoRA", "TriAdaptLoRA again"]}}],
        "seeds": [0, 1], "select": {"axis": "train.learning_rate", "values": [1e-5, 2e-3], "seeds": [0]}}


def test_selection_then_the_other_seeds_at_the_chosen_value(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    assert run_main(["ablate", grid, "--dry-run"]) == 0
    assert "selection: train.learning_rate over [1e-05, 0.002] on seeds [0]" in capsys.readouterr().out
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lr").experiment_id
    parent = client.search_runs([experiment], "tags.`triadapt.role` = 'parent'")[0]
    cells = client.search_runs([experiment], "tags.`triadapt.role` = 'cell'")
    assert len(cells) == 2 * (2 + 1)  # per row: 2 values at seed 0, then seed 1 at the chosen value
    by_start = sorted(cells, key=lambda r: r.info.start_time)
    assert [r.data.tags["triadapt.method"] for r in by_start] == ["TriAdaptLoRA"] * 3 + ["TriAdaptLoRA again"] * 3
    assert [r.data.tags["triadapt.seed"] for r in by_start[:3]] == ["0", "0", "1"]  # a row is whole before the next
    report = json.loads(open(client.download_artifacts(parent.info.run_id, "selection.json", str(tmp_path))).read())
    for row, entry in report["rows"].items():
        seed0 = {float(v): s for v, s in entry["scores"].items()}
        best = max(seed0.values())
        assert entry["chosen"] == next(v for v in (1e-5, 2e-3) if seed0[v] == best)  # ties: the first value
        method = json.loads(row)["method"]
        runs = [r for r in cells if r.data.tags["triadapt.method"] == method]
        chosen = [r for r in runs if r.data.tags.get("triadapt.selection") == "chosen"]
        assert sorted(int(r.data.tags["triadapt.seed"]) for r in chosen) == [0, 1]
        assert {float(r.data.params["train.learning_rate"]) for r in chosen} == {entry["chosen"]}
        assert [r.data.tags["triadapt.selection"] for r in runs].count("rejected") == 1
        side, beyond = ("top", "above") if entry["chosen"] == 2e-3 else ("bottom", "below")
        assert (f"selected train.learning_rate={entry['chosen']!r} for {row} (" in printed
                and f"; the {side} of select.values: the best value may lie {beyond} it)" in printed)
    assert run_main(["compare", "--grid", "lr", "--tracking-uri", uri]) == 0
    compared = capsys.readouterr().out
    assert "(n=2)" in compared  # the rejected run is left out: no mixed configs
    ends = {"top": [], "bottom": []}  # two values: every row is at one end
    for row, entry in report["rows"].items():
        ends["top" if entry["chosen"] == 2e-3 else "bottom"].append(json.loads(row)["method"])
    parts = [f"the largest (0.002; the best may lie above): {', '.join(ends['top'])}" if ends["top"] else "",
             f"the smallest (1e-05; the best may lie below): {', '.join(ends['bottom'])}" if ends["bottom"] else ""]
    assert "rows that chose an end of train.learning_rate's values: " + "; ".join(p for p in parts if p) in compared
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0  # resume: all finished
    assert "grid done: 6 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("select,pattern", [
    ({"axis": "train.learning_rate", "values": [1e-3]}, r"select.values=\[0.001\] is invalid: give a list of at least two"),
    ({"axis": "train.lr", "values": [1, 2]}, r"select.axis='train.lr' is invalid: not a run config key"),
    ({"axis": "method", "values": ["a", "b"]}, r"select.axis='method' is invalid: it is also an axis"),
    ({"axis": "train.learning_rate", "values": [1e-3, 1e-4], "seeds": [7]},
     r"select.seeds=\[7\] is invalid: a non-empty subset of seeds \[0, 1\]"),
    ({"values": [1, 2]}, r"select=\{'values': \[1, 2\]\} is invalid: a mapping with axis, values"),
    ({"axis": "train.learning_rate", "values": [1e-3, 1e-4], "metric": "accuray"},
     r"g.yaml: select.metric='accuray' is invalid: use main or a metric every row reports \(accuracy, f1\)"),
], ids=["one-value", "unknown-key", "also-an-axis", "seeds-not-in-grid", "no-axis", "metric-typo"])
def test_bad_selection(select, pattern, tmp_path, populated_store, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {**GRID, "select": select})
    assert_bad_input(["ablate", grid, "--tracking-uri", populated_store], pattern, populated_store, capsys)


def test_a_select_metric_typo_fails_the_dry_run(tmp_path, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {**GRID, "select": {**GRID["select"], "metric": "accuray"}})
    assert run_main(["ablate", grid, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (
        f"triadapt: error: {grid}: select.metric='accuray' is invalid: use main or a metric every row reports "
        f"(accuracy, f1)")


def test_a_select_metric_must_be_reported_by_every_row():
    grid = {**GRID, "axes": [{"product": {"task": ["rotten_tomatoes", "rotten_tomatoes_sft"]}}],
            "select": {**GRID["select"], "metric": "accuracy"}}
    with pytest.raises(RunnerError, match=r"select.metric='accuracy' is invalid: use main \(the rows' tasks report no "
                                          r"metric in common\); task 'rotten_tomatoes_sft' reports loss, perplexity"):
        parse_grid(grid)
    assert parse_grid({**grid, "select": {**GRID["select"], "metric": "main"}}).select.metric == "main"


def select_from_runs(tmp_path, base, metric, results):
    """Apply the selection of a one-row grid to finished runs logged with ``results[value]`` (no training)."""
    spec = parse_grid({"name": "pick", "base": base, "seeds": [0],
                       "select": {"axis": "train.learning_rate", "values": list(results), "metric": metric}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'pick.db'}", "pick")
    parent = tracker.start_run("grid:pick", {"triadapt.role": "parent", "triadapt.grid": "pick"})
    for cell in spec.selection_cells():
        run = tracker.start_run("cell", {"triadapt.role": "cell", "triadapt.cell_id": cell.id}, parent)
        tracker.log_metrics(run, results[cell.axes["train.learning_rate"]], 1)
        tracker.end_run(run)
    row = spec.selection_cells()[0].row
    return apply_selection(spec, tracker, parent, announce=row).get(row)


LM_RESULTS = {1e-5: {"result_loss": 0.40, "result_perplexity": 1.49},
              2e-3: {"result_loss": 0.20, "result_perplexity": 1.22}}


@pytest.mark.parametrize("metric", ["main", "perplexity", "loss"])
def test_loss_and_perplexity_are_minimised_however_they_are_named(metric, tmp_path, capsys):
    """An explicit ``metric: perplexity`` (or loss) chooses the lower value, as ``main`` does for an LM task."""
    assert select_from_runs(tmp_path, {"task": "rotten_tomatoes_sft"}, metric, LM_RESULTS) == 2e-3
    assert "selected train.learning_rate=0.002" in capsys.readouterr().out


def test_accuracy_is_maximised(tmp_path):
    results = {1e-5: {"result_accuracy": 0.81, "result_f1": 0.70}, 2e-3: {"result_accuracy": 0.74, "result_f1": 0.75}}
    assert select_from_runs(tmp_path, {"task": "rotten_tomatoes"}, "main", results) == 1e-5
    assert select_from_runs(tmp_path / "f1", {"task": "rotten_tomatoes"}, "f1", results) == 2e-3


def test_main_of_a_custom_task_is_its_kinds_main_metric(tmp_path):
    """Custom regression: main is pearson (maximised), custom lm: perplexity (minimised), not accuracy."""
    files = {"task": "custom", "train_file": "t.csv", "validation_file": "v.csv"}
    results = {1e-5: {"result_pearson": 0.30, "result_spearman": 0.9}, 2e-3: {"result_pearson": 0.60,
                                                                            "result_spearman": 0.1}}
    assert select_from_runs(tmp_path, {"data": {**files, "kind": "regression"}}, "main", results) == 2e-3
    assert select_from_runs(tmp_path / "lm", {"data": {**files, "kind": "lm"}}, "main", LM_RESULTS) == 2e-3


def test_a_row_whose_finished_runs_lack_the_metric_is_an_error(tmp_path):
    """f1 is a metric of rotten_tomatoes, but these runs never logged it: the row cannot choose, so the grid fails."""
    results = {1e-5: {"result_accuracy": 0.81}, 2e-3: {"result_accuracy": 0.74}}
    with pytest.raises(RunnerError, match=r"select.metric='f1' is invalid for row \{\}: none of its finished selection "
                                          r"runs reports it \(they report accuracy\)"):
        select_from_runs(tmp_path, {"task": "rotten_tomatoes"}, "f1", results)


def test_a_grid_whose_rows_cannot_choose_fails_instead_of_ending_done(tmp_path, capsys):
    """Three-class custom data reports macro_f1, not f1 (a metric its kind may report): the grid fails naming both."""
    rows = "text,label\n" + "".join(f"review {i} {'good' if i % 3 else 'bad'},{i % 3}\n" for i in range(24))
    (tmp_path / "t.csv").write_text(rows)
    data = {"task": "custom", "train_file": str(tmp_path / "t.csv"), "validation_file": str(tmp_path / "t.csv")}
    grid = write_yaml(tmp_path / "g.yaml", {**GRID, "name": "nochoice", "axes": [], "seeds": [0],
                                            "base": {**TINY, "data": {**TINY["data"], **data}},
                                            "select": {**GRID["select"], "metric": "f1"}})
    assert run_main(["ablate", grid, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("triadapt: error: select.metric='f1' is invalid for row {}: none of its finished selection runs "
                   "reports it (they report accuracy, macro_f1)")
