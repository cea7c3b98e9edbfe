"""Bad command-line arguments: exit 2, one line naming the argument, no MLflow run created or changed."""

import pytest

from conftest import TINY, assert_bad_input, run_main, write_yaml


@pytest.fixture
def files(tmp_path):
    grid = write_yaml(tmp_path / "grid.yaml", {"name": "g-ok", "base": {"task": "rotten_tomatoes", **TINY}})
    other = write_yaml(tmp_path / "other.yaml", {"name": "nowhere", "experiment": "none-such"})
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    return {"grid": grid, "other": other, "folder": folder, "tmp": tmp_path}


CASES = [
    ("no-command", [], r"triadapt: error: the following arguments are required: COMMAND; see 'triadapt --help'"),
    ("unknown-command", ["fly"], r"argument COMMAND: invalid choice: 'fly'"),
    ("unknown-option", ["train", "--epochs", "3"], r"unrecognized arguments: --epochs 3"),
    ("ablate-without-grid", ["ablate"], r"triadapt ablate: error: the following arguments are required: grid"),
    ("missing-grid-file", ["ablate", "{tmp}/none.yaml"], r"none.yaml: grid file not found"),
    ("grid-is-a-folder", ["ablate", "{folder}"], r"folder.yaml: grid file not found"),
    ("set-without-equals", ["train", "--set", "train.epochs"], r"--set 'train.epochs' is invalid: use KEY=VALUE"),
    ("set-empty-key", ["train", "--set", "=3"], r"--set '=3' is invalid: use KEY=VALUE"),
    ("set-bad-yaml", ["train", "--set", "adapter.target_modules=[query"], r"--set 'adapter.target_modules=\[query' is "
                                                                          r"invalid: the value is not valid YAML"),
    ("set-into-a-value", ["train", "--set", "train.epochs.x=1"], r"train.epochs=\{'x': 1\} is invalid: must be a "
                                                                  r"positive integer"),
    ("set-unknown-section-key", ["train", "--set", "train.epoch=2"], r"train.epoch=2 is invalid: unknown key"),
    ("task-unknown", ["train", "--task", "imdb"], r"data.task='imdb' is invalid: known tasks are"),
    ("config-missing", ["train", "--config", "{tmp}/run.yaml"], r"run.yaml: --config file not found"),
    ("compare-needs-a-source", ["compare"], r"one of the arguments --grid --parent --all is required"),
    ("compare-two-sources", ["compare", "--grid", "a", "--all"], r"argument --all: not allowed with argument --grid"),
    ("compare-unknown-grid", ["compare", "--grid", "nope"], r"grid='nope' is invalid: no grid of that name in any "
                                                            r"experiment"),
    ("compare-unknown-experiment", ["compare", "--grid", "g", "--experiment", "elsewhere"],
     r"experiment='elsewhere' is invalid: the tracking store has no such experiment \(it has Default, triadapt\)"),
    ("compare-grid-file-elsewhere", ["compare", "--grid", "{other}"], r"experiment='none-such' is invalid"),
    ("compare-grid-not-in-experiment", ["compare", "--grid", "nope", "--experiment", "triadapt"],
     r"grid='nope' is invalid: no grid of that name in experiment 'triadapt'"),
    ("compare-unknown-parent", ["compare", "--parent", "0123456789abcdef"], r"parent='0123456789abcdef' is invalid"),
    ("compare-unknown-metric", ["compare", "--grid", "g", "--metric", "bleu"],
     r"metric='bleu' is invalid: use main, a metric of the runs' tasks \(accuracy, f1\) or a run metric \(rank_use, "),
    ("compare-metric-typo", ["compare", "--grid", "g", "--metric", "accuray"],
     r"metric='accuray' is invalid: use main"),
    ("compare-metric-the-run-lacks", ["compare", "--grid", "g", "--metric", "f1"],
     r"metric='f1' is invalid for run \w+ \(m, rotten_tomatoes\): it has accuracy"),
    ("select-metric-typo-dry-run", ["ablate", "{typo_grid}", "--dry-run"],
     r"typo.yaml: select.metric='accuray' is invalid: use main or a metric every row reports \(accuracy, f1\)"),
    ("data-fetch-unknown", ["data", "fetch", "imdb"], r"dataset='imdb' is not built in: built-in datasets are"),
    ("data-without-action", ["data"], r"triadapt data: error: the following arguments are required: ACTION"),
    ("dry-run-invalid-cell", ["ablate", "{bad_grid}", "--dry-run"], r"bad.yaml: 1 of 1 cells are invalid"),
]


@pytest.mark.parametrize("argv,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument(argv, pattern, files, populated_store, capsys, monkeypatch):
    monkeypatch.chdir(files["tmp"])
    files["bad_grid"] = write_yaml(files["tmp"] / "bad.yaml", {
        "name": "bad", "base": {"task": "rotten_tomatoes", **TINY, "adapter": {"total_budget": 4}}})
    files["typo_grid"] = write_yaml(files["tmp"] / "typo.yaml", {
        "name": "typo", "base": {"task": "rotten_tomatoes", **TINY},
        "select": {"axis": "train.learning_rate", "values": [1e-4, 1e-3], "metric": "accuray"}})
    argv = [a.format(**files) for a in argv]
    if argv and argv[0] in ("train", "ablate", "compare", "demo") and "--dry-run" not in argv:
        argv += ["--tracking-uri", populated_store]
    assert_bad_input(argv, pattern, populated_store, capsys)


def test_dry_run_lists_every_invalid_cell(tmp_path, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {
        "name": "mixed", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"zip": {"method": ["fine", "small budget", "no event", "no targets"],
                          "adapter.total_budget": [None, 4, None, None],
                          "adapter.growth_interval": [1, 1, 5, 1],
                          "adapter.warmup_steps": [0, 0, 2, 0],
                          "adapter.target_modules": [None, None, None, ["q_proj"]]}}]})
    assert run_main(["ablate", grid, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "4 cells" in captured.out and "3 invalid" in captured.out
    lines = captured.out.splitlines()
    invalid = [line for line in lines if "INVALID" in line]
    assert len(invalid) == 3
    assert "adapter.total_budget=4 is invalid" in invalid[0]
    assert "adapter.total_steps=3 is invalid: allows no growth event" in invalid[1]
    assert "adapter.target_modules=['q_proj'] matches no linear layer" in invalid[2]
    assert "t=1:k=" in captured.out  # the valid cell shows its schedule
    assert captured.err.strip() == f"triadapt: error: {grid}: 3 of 4 cells are invalid (listed above)"


def test_ablate_refuses_a_grid_with_an_invalid_cell_before_any_run(tmp_path, populated_store, capsys):
    grid = write_yaml(tmp_path / "g.yaml", {
        "name": "half-bad", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"zip": {"method": ["fine", "small budget"], "adapter.total_budget": [None, 4]}}]})
    assert_bad_input(["ablate", grid, "--tracking-uri", populated_store],
                     r"g.yaml: 1 of 2 cells are invalid \(see --dry-run\); first: cell \w+ \(small budget, seed 0\): "
                     r"adapter.total_budget=4 is invalid", populated_store, capsys)


def test_compare_finds_the_grid_in_the_only_experiment_that_has_it(tmp_path, capsys):
    from triadapt_runner.tracking.runs import FINISHED, Tracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for experiment in ("first", "second"):
        tracker = Tracker(uri, experiment)
        parent = tracker.start_run("grid", {"triadapt.grid": f"g-{experiment}", "triadapt.role": "parent"})
        child = tracker.start_run("cell", {"triadapt.role": "cell", "triadapt.method": f"m-{experiment}",
                                           "triadapt.task": "rotten_tomatoes", "triadapt.seed": "0",
                                           "triadapt.config_hash": "h", "triadapt.cell_id": "c"}, parent)
        tracker.log_metrics(child, {"result_accuracy": 0.75}, 1)
        tracker.end_run(child, FINISHED)
    assert run_main(["compare", "--grid", "g-second", "--tracking-uri", uri]) == 0
    assert "m-second" in capsys.readouterr().out
    grid_file = write_yaml(tmp_path / "g.yaml", {"name": "g-first", "experiment": "first"})
    assert run_main(["compare", "--grid", grid_file, "--tracking-uri", uri]) == 0
    assert "m-first" in capsys.readouterr().out
    Tracker(uri, "third").start_run("grid", {"triadapt.grid": "g-first", "triadapt.role": "parent"})
    assert run_main(["compare", "--grid", "g-first", "--tracking-uri", uri]) == 2
    assert "grid='g-first' is ambiguous: experiments first, third each hold" in capsys.readouterr().err


def test_cli_module_imports_no_heavy_library():
    import subprocess
    import sys

    code = ("import sys, triadapt_runner.cli; heavy = [m for m in ('torch', 'transformers', 'mlflow', 'datasets', "
            "'accelerate', 'deepspeed') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
