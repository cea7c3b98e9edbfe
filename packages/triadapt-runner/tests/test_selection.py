"""Choosing the learning rate per row on validation, the same protocol for every row."""

import json

import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, assert_bad_input, run_main, write_yaml
from triadapt_runner.grid.selection import Selection, choose

SELECT = Selection("train.learning_rate", (1e-4, 5e-4, 2.5e-3), (0, 1))


def test_choose_by_mean_of_the_selection_seeds():
    scores = {"a": {1e-4: [0.60, 0.62], 5e-4: [0.70, 0.66], 2.5e-3: [0.71, 0.64]},  # means .61, .68, .675
              "b": {1e-4: [0.5, 0.5], 5e-4: [0.5, 0.5]},  # a tie: the first value listed
              "c": {}}
    assert choose(SELECT, scores) == {"a": 5e-4, "b": 1e-4}


GRID = {"name": "lr", "experiment": "lr", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"zip": {"method": ["TriAdaptLoRA", "TriAdaptLoRA again"]}}],
        "seeds": [0, 1], "select": {"axis": "train.learning_rate", "values": [1e-5, 2e-3], "seeds": [0]}}


def test_selection_then_the_other_seeds_at_the_chosen_value(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = write_yaml(tmp_path / "g.yaml", GRID)
    assert run_main(["ablate", grid, "--dry-run"]) == 0
    assert "selection: train.learning_rate over [1e-05, 0.002] on seeds [0]" in capsys.readouterr().out
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0
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
    capsys.readouterr()
    assert run_main(["compare", "--grid", "lr", "--tracking-uri", uri]) == 0
    assert "(n=2)" in capsys.readouterr().out  # the rejected run is left out: no mixed configs
    assert run_main(["ablate", grid, "--tracking-uri", uri, "--no-progress"]) == 0  # resume: all finished
    assert "grid done: 6 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("select,pattern", [
    ({"axis": "train.learning_rate", "values": [1e-3]}, r"select.values=\[0.001\] is invalid: give a list of at least two"),
    ({"axis": "train.lr", "values": [1, 2]}, r"select.axis='train.lr' is invalid: not a run config key"),
    ({"axis": "method", "values": ["a", "b"]}, r"select.axis='method' is invalid: it is also an axis"),
    ({"axis": "train.learning_rate", "values": [1e-3, 1e-4], "seeds": [7]},
     r"select.seeds=\[7\] is invalid: a non-empty subset of seeds \[0, 1\]"),
    ({"values": [1, 2]}, r"select=\{'values': \[1, 2\]\} is invalid: a mapping with axis, values"),
], ids=["one-value", "unknown-key", "also-an-axis", "seeds-not-in-grid", "no-axis"])
def test_bad_selection(select, pattern, tmp_path, populated_store, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {**GRID, "select": select})
    assert_bad_input(["ablate", grid, "--tracking-uri", populated_store], pattern, populated_store, capsys)
