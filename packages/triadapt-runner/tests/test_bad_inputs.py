"""Bad grid files get one line on stderr naming what is wrong, and exit code 2; nothing computed is lost."""

import pytest

from conftest import TINY, assert_bad_input, write_yaml
from triadapt import ScorerSpec, hookimpl
from triadapt.scorers import FrobeniusScorer
from triadapt_runner.cli import main

GOOD = {"name": "g", "base": {"task": "rotten_tomatoes", **TINY},
        "axes": [{"product": {"adapter.threshold": ["linear"]}}], "seeds": [0]}


def grid_with(**changes):
    return {**GOOD, **changes}


CASES = [
    ("yaml-syntax", "name: g\naxes: [\n", r"invalid YAML at line \d+"),
    ("top-level-key", grid_with(sweep=1), "top-level key 'sweep' is invalid: valid keys are"),
    ("unknown-axis", grid_with(axes=[{"product": {"adapter.rnak": [1]}}]), "axis 'adapter.rnak' is invalid"),
    ("unknown-task", grid_with(base={"task": "imdb"}), "data.task='imdb' is invalid: known tasks are cola,"),
    ("negative-epochs", grid_with(base={"train": {"epochs": -1}}), "train.epochs=-1 is invalid: must be a positive"),
    ("zip-lengths", grid_with(axes=[{"zip": {"method": ["a", "b"], "adapter.init_rank": [1]}}]),
     r"axes\[0\].zip lists must have equal lengths"),
    ("duplicate-seeds", grid_with(seeds=[1, 1]), r"seeds=\[1, 1\] is invalid: duplicate seeds"),
    ("seed-not-int", grid_with(seeds=["one"]), "seeds=\\['one'\\] is invalid: give a non-empty list of integers"),
    ("unknown-scorer", grid_with(axes=[{"product": {"adapter.scorer": ["grad"]}}]),
     "adapter.scorer='grad' is unknown: available scorers are fnorm, fnorm-raw, fnorm-sqrt"),
    ("bad-rounding", grid_with(base={"adapter": {"rounding": "up"}}), "adapter.rounding='up' is invalid"),
    ("learning-rate-string", grid_with(base={"train": {"learning_rate": "fast"}}),
     "train.learning_rate='fast' is invalid"),
    ("unknown-section-key", grid_with(base={"train": {"epoch": 2}}), "train.epoch=2 is invalid: unknown key"),
    ("bad-kind", grid_with(base={"data": {"task": "custom", "train_file": "a.csv", "validation_file": "a.csv",
                                          "kind": "multi"}}), "data.kind='multi' is invalid"),
    ("max-length", grid_with(base={"data": {"max_length": 2}}), "data.max_length=2 is invalid"),
    ("fp16", grid_with(base={"train": {"mixed_precision": "fp16"}}), "train.mixed_precision='fp16' is invalid"),
    ("zero-stage", grid_with(base={"train": {"zero_stage": 4}}), "train.zero_stage=4 is invalid: use 0, 1, 2 or 3"),
    ("offload-without-zero", grid_with(base={"train": {"offload_optimizer": True}}),
     "train.offload_optimizer=True is invalid: needs train.zero_stage 1, 2 or 3"),
    ("deepspeed-config-missing", grid_with(base={"train": {"deepspeed_config": "nope.json"}}),
     "train.deepspeed_config='nope.json' is invalid: no such file"),
    ("checkpoint-every", grid_with(base={"train": {"checkpoint_every": 0}}), "train.checkpoint_every=0 is invalid"),
    ("seed-axis", grid_with(axes=[{"product": {"train.seed": [1, 2]}}]), "list seeds under the top-level 'seeds'"),
    ("unknown-model", grid_with(base={"model": "no/such-model-here"}), "model='no/such-model-here' is invalid"),
    ("missing-data-file", grid_with(base={"data": {"task": "custom", "train_file": "nope.csv",
                                                    "validation_file": "nope.csv"}}),
     "data.train_file='nope.csv' is invalid: no such file"),
    ("not-a-mapping", "- 1\n- 2\n", "grid.yaml: a grid is a mapping with keys name, experiment"),
    ("no-name", {k: v for k, v in GOOD.items() if k != "name"}, r"name=None is invalid: give the grid a non-empty name"),
    ("base-not-mapping", grid_with(base=[1]), r"base=\[1\] is invalid: must be a mapping"),
    ("axes-not-list", grid_with(axes={"product": {"task": ["rotten_tomatoes"]}}), r"axes=\{.*\} is invalid: a list of"),
    ("axis-group-kind", grid_with(axes=[{"cross": {"task": ["rotten_tomatoes"]}}]), r"axes\[0\]=.* is invalid: each "
                                                                                    r"group is"),
    ("empty-axis", grid_with(axes=[{"product": {"adapter.threshold": []}}]), r"axis 'adapter.threshold'=\[\] is "
                                                                              r"invalid: give a non-empty list"),
    ("duplicate-cells", grid_with(axes=[{"product": {"adapter.threshold": ["linear", "linear"]}}]),
     "two cells resolve to the same config"),
    ("empty-seeds", grid_with(seeds=[]), r"seeds=\[\] is invalid: give a non-empty list of integers"),
    ("budget-below-start", grid_with(base={**GOOD["base"], "adapter": {"total_budget": 4}}),
     r"grid.yaml: 1 of 1 cells are invalid .*adapter.total_budget=4 is invalid: must be >= init_rank × matrices"),
    ("targets-match-nothing", grid_with(axes=[{"product": {"adapter.target_modules": [["query"], ["q_proj"]]}}]),
     r"1 of 2 cells are invalid .*adapter.target_modules=\['q_proj'\] matches no linear layer"),
    ("no-growth-event", grid_with(base={**GOOD["base"], "adapter": {"warmup_steps": 2, "growth_interval": 5}}),
     r"adapter.total_steps=3 is invalid: allows no growth event"),
]


@pytest.mark.parametrize("name,grid,message", CASES, ids=[c[0] for c in CASES])
def test_bad_grid(name, grid, message, tmp_path, capsys, monkeypatch, populated_store):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "grid.yaml"
    if isinstance(grid, str):
        path.write_text(grid)
    else:
        write_yaml(path, grid)
    assert_bad_input(["ablate", str(path), "--tracking-uri", populated_store], message, populated_store, capsys)


def test_wrong_column_in_data_file(tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\ngood,1\nbad,0\n")
    grid = write_yaml(tmp_path / "g.yaml", grid_with(base={"data": {
        "task": "custom", "train_file": str(data), "validation_file": str(data), "text_column": "review"}}))
    assert main(["ablate", str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "data.label_column='label' is invalid: " in capsys.readouterr().err


def test_missing_grid_file_and_bad_set(tmp_path, capsys):
    assert main(["ablate", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: grid file not found" in capsys.readouterr().err
    assert main(["train", "--set", "train.epochs"]) == 2
    assert "--set 'train.epochs' is invalid: use KEY=VALUE" in capsys.readouterr().err
    assert main(["data", "fetch", "imdb"]) == 2
    assert "dataset='imdb' is not built in" in capsys.readouterr().err


def test_compare_unknown_grid(tmp_path, capsys):
    assert main(["compare", "--grid", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "grid='nope' is invalid: no grid of that name" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


class ExplodingScorer(FrobeniusScorer):
    """Passes every check before training; fails at the first growth event."""

    def scores(self, layers):
        raise RuntimeError("scorer 'explodes' failed at a growth event")


class ExplodingPlugin:
    @staticmethod
    @hookimpl
    def triadapt_scorers():
        return [ScorerSpec("explodes", lambda cfg: ExplodingScorer("explodes", "r"))]


def test_failed_cell_does_not_stop_the_grid_unless_fail_fast(tmp_path, capsys, register_plugin):
    from mlflow.tracking import MlflowClient

    register_plugin(ExplodingPlugin())
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    grid = grid_with(name="partial", axes=[{"zip": {"method": ["broken", "fine"],
                                                      "adapter.scorer": ["explodes", "fnorm"]}}])
    path = write_yaml(tmp_path / "g.yaml", grid)
    assert main(["ablate", str(path), "--tracking-uri", uri, "--no-progress", "--fail-fast"]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "scorer 'explodes' failed at a growth event" in out and "fine" not in out
    assert main(["ablate", str(path), "--tracking-uri", uri, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "1 failed, 1 finished" in out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("triadapt").experiment_id],
                              "tags.`triadapt.role` = 'cell'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]  # the finished run is kept


def test_doc_stride_must_fit_the_window(tmp_path, capsys):
    grid = write_yaml(tmp_path / "g.yaml", grid_with(base={"task": "squad_v2", "data": {"max_length": 64,
                                                                                         "doc_stride": 64}}))
    assert main(["ablate", str(grid), "--dry-run"]) == 2
    assert "data.doc_stride=64 is invalid: must be an integer in (0, max_length=64)" in capsys.readouterr().err


def test_deepspeed_config_must_be_json_without_fp16(tmp_path, capsys):
    bad = tmp_path / "ds.json"
    bad.write_text("{ zero: 2 }")
    grid = write_yaml(tmp_path / "g.yaml", grid_with(base={"train": {"deepspeed_config": str(bad)}}))
    assert main(["ablate", str(grid), "--dry-run"]) == 2
    assert "train.deepspeed_config=" in (err := capsys.readouterr().err) and "not valid JSON (line 1" in err
    bad.write_text('{"fp16": {"enabled": true}}')
    assert main(["ablate", str(grid), "--dry-run"]) == 2
    assert "fp16 is not supported; use bf16" in capsys.readouterr().err


def test_fsdp_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    grid = write_yaml(tmp_path / "g.yaml", GOOD)
    assert main(["ablate", str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert "FSDP is not supported" in err and "train.zero_stage=3" in err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("triadapt")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no run was started


def test_deepspeed_launcher_argument_is_accepted(tmp_path, capsys):
    """`deepspeed … $(which triadapt) ablate …` passes --local_rank=N before the subcommand."""
    grid = write_yaml(tmp_path / "g.yaml", GOOD)
    assert main(["--local_rank=1", "ablate", str(grid), "--dry-run"]) == 0
    assert "1 cells" in capsys.readouterr().out
