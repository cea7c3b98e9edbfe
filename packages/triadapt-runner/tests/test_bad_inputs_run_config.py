"""Bad run configs (`triadapt train --config FILE --set KEY=VALUE`): exit 2, one line naming the field, no MLflow run.

Every case is caught before training starts, including what only `inject`, the allocator and
the schedule can tell (checked on the model's structure, before any MLflow run exists).
"""

import pytest

from conftest import TINY, assert_bad_input, run_main, store_snapshot, write_yaml

CASES = [
    # (id, overrides, pattern)
    ("unknown-top-level", {"optimizer": "sgd"}, r"optimizer='sgd' is invalid: unknown key; valid keys are adapter"),
    ("unknown-data-key", {"data.max_len": 64}, r"data.max_len=64 is invalid: unknown key"),
    ("unknown-train-key", {"train.lr": 0.1}, r"train.lr=0.1 is invalid: unknown key"),
    ("unknown-adapter-key", {"adapter.rnak": 4}, r"adapter.rnak=4 is invalid: is not a TriAdaptConfig field"),
    ("epochs-zero", {"train.epochs": 0}, r"train.epochs=0 is invalid: must be a positive integer"),
    ("batch-negative", {"train.batch_size": -4}, r"train.batch_size=-4 is invalid"),
    ("lr-word", {"train.learning_rate": "fast"}, r"train.learning_rate='fast' is invalid: must be a number > 0"),
    ("lr-zero", {"train.learning_rate": 0}, r"train.learning_rate=0 is invalid: must be a number > 0"),
    ("weight-decay", {"train.weight_decay": -0.1}, r"train.weight_decay=-0.1 is invalid: must be a number >= 0"),
    ("warmup-ratio", {"train.warmup_ratio": 1.5}, r"train.warmup_ratio=1.5 is invalid: must be in \[0, 1\)"),
    ("report", {"train.report": "median"}, r"train.report='median' is invalid: use 'best' or 'last'"),
    ("fp16", {"train.mixed_precision": "fp16"}, r"train.mixed_precision='fp16' is invalid"),
    ("zero-stage", {"train.zero_stage": 5}, r"train.zero_stage=5 is invalid: use 0, 1, 2 or 3"),
    ("threads-negative", {"train.threads": -1}, r"train.threads=-1 is invalid: must be a positive integer"),
    ("num-processes-zero", {"train.num_processes": 0}, r"train.num_processes=0 is invalid: must be a positive integer"),
    ("num-processes-above-the-cores", {"train.num_processes": 4096},
     r"train.num_processes=4096 is invalid here: more processes than the \d+ CPU cores"),
    ("adalora-init-r-string", {"approach": "peft-adalora", "approach_options.init_r": "8"},
     r"approach_options.init_r=.8. is invalid: must be a non-negative integer"),
    ("seed-word", {"train.seed": "lucky"}, r"train.seed='lucky' is invalid: must be an integer"),
    ("task", {"task": "imdb"}, r"data.task='imdb' is invalid: known tasks are"),
    ("max-length", {"data.max_length": 4}, r"data.max_length=4 is invalid: must be an integer in \[8, 8192\]"),
    ("validation-fraction", {"data.validation_fraction": 1.5}, r"data.validation_fraction=1.5 is invalid"),
    ("validation-fraction-word", {"data.validation_fraction": "abc"},
     r"data.validation_fraction='abc' is invalid: must be a number in \(0, 1\)"),
    ("kind-of-a-builtin-task", {"data.kind": "regression"},
     r"data.kind='regression' is invalid: task 'rotten_tomatoes' is built in, of kind 'single'; data.kind is for "
     r"custom data \(data.task=custom\)"),
    ("kind-unknown", {"data.kind": "multi"},
     r"data.kind='multi' is invalid: use one of single, pair, regression, sft, lm"),
    ("max-train-samples", {"data.max_train_samples": 0}, r"data.max_train_samples=0 is invalid"),
    ("unknown-scorer", {"adapter.scorer": "gradnorm"}, r"adapter.scorer='gradnorm' is unknown: available scorers"),
    ("growth-interval", {"adapter.growth_interval": 0}, r"adapter.growth_interval=0 is invalid: must be >= 1"),
    ("budget-below-start", {"adapter.total_budget": 4, "adapter.init_rank": 1},
     r"adapter.total_budget=4 is invalid: must be >= init_rank × matrices = 1 × 36"),
    ("targets-match-nothing", {"adapter.target_modules": ["q_proj"]},
     r"adapter.target_modules=\['q_proj'\] matches no linear layer of this model; its linear layers are"),
    ("unknown-head", {"adapter.trainable_modules": ["head"]},
     r"adapter.trainable_modules=\['head'\]: 'head' is not a module of this model"),
    ("no-growth-event", {"adapter.warmup_steps": 2, "adapter.growth_interval": 5},
     r"adapter.total_steps=3 is invalid: allows no growth event with warmup_steps=2 .* step 5"),
    ("lora-identity", {"adapter.structure": "lora", "adapter.core_init": "identity"},
     r"adapter.core_init='identity' is invalid: structure 'lora' has no core"),
    ("unknown-model", {"model": "no/such-model-here"}, r"model='no/such-model-here' is invalid"),
    ("unknown-approach", {"approach": "dora"}, r"approach='dora' is invalid: use one of triadapt, increlora-style, "
                                                r"peft-lora, peft-adalora, full-finetune"),
    ("option-of-another-approach", {"approach_options.init_r": 12}, r"approach_options.init_r=12 is invalid: approach "
                                                                      r"'triadapt' takes no options"),
    ("adalora-total-budget", {"approach": "peft-adalora", "adapter.total_budget": 100},
     r"adapter.total_budget=100 is invalid with approach 'peft-adalora': AdaLoRA's budget is a rank per matrix"),
    ("adalora-init-below-target", {"approach": "peft-adalora", "approach_options.init_r": 1},
     r"approach_options.init_r=1 is invalid: AdaLoRA prunes from init_r to target_r = adapter.ref_rank = 2"),
    ("adalora-no-allocation", {"approach": "peft-adalora", "approach_options.tinit": 3},
     r"approach_options.tinit=3 is invalid: AdaLoRA allocates between tinit and T - tfinal"),
    ("increlora-other-structure", {"approach": "increlora-style", "adapter.structure": "triangular"},
     r"adapter.structure='triangular' is invalid with approach 'increlora-style', which sets it to 'lora'"),
    ("zero3-init-without-zero3", {"train.zero3_init": True, "train.zero_stage": 2},
     r"train.zero3_init=True is invalid: needs train.zero_stage 3"),
    ("peer-under-deepspeed", {"approach": "peft-lora", "train.zero_stage": 2},
     r"approach='peft-lora' is invalid in a multi-process or DeepSpeed run"),
]


@pytest.mark.parametrize("overrides,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_run_config(overrides, pattern, tmp_path, populated_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_yaml(tmp_path / "run.yaml", {"task": "rotten_tomatoes", **TINY})
    sets = [a for key, value in overrides.items() for a in ("--set", f"{key}={_yaml(value)}")]
    assert_bad_input(["train", "--config", config, *sets, "--tracking-uri", populated_store, "--no-progress"],
                     pattern, populated_store, capsys)


def _yaml(value) -> str:
    import json

    return json.dumps(value) if isinstance(value, (list, str)) else str(value)


@pytest.mark.parametrize("text,pattern", [
    ("- a list\n", "a run config is a mapping"),
    ("task: [rotten\n", r"invalid YAML at line \d+, column \d+"),
    ("train: 3\n", r"train=3 is invalid: must be a mapping"),
], ids=["not-a-mapping", "yaml-syntax", "section-not-a-mapping"])
def test_bad_run_config_file(text, pattern, tmp_path, populated_store, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert_bad_input(["train", "--config", config, "--tracking-uri", populated_store], pattern, populated_store, capsys)


def test_missing_config_file(tmp_path, populated_store, capsys):
    assert_bad_input(["train", "--config", tmp_path / "none.yaml", "--tracking-uri", populated_store],
                     r"none.yaml: --config file not found", populated_store, capsys)


@pytest.mark.parametrize("written", ["1e-4", "2E-3", "5.0e-4", "0.0002", ".5e-3"])
def test_numbers_written_the_usual_way_are_numbers(written, tmp_path):
    """`1e-4` is a float in YAML 1.2 and Python, a string in PyYAML's YAML 1.1: accepted everywhere."""
    from triadapt_runner.config import RunConfig, apply_overrides
    from triadapt_runner.cli import _parse_override
    from triadapt_runner.grid.spec import load_grid
    from triadapt_runner.yamlfile import read_yaml

    expected = float(written)
    (tmp_path / "run.yaml").write_text(f"train:\n  learning_rate: {written}\n")
    from_file = RunConfig.from_dict(read_yaml(tmp_path / "run.yaml", "--config"))
    from_set = RunConfig.from_dict(apply_overrides({}, dict([_parse_override(f"train.learning_rate={written}")])))
    (tmp_path / "grid.yaml").write_text(f"name: g\naxes:\n  - product:\n      train.learning_rate: [{written}, 1e-3]\n"
                                        f"      adapter.orth_reg_weight: [{written}]\n")
    cells = load_grid(tmp_path / "grid.yaml").cells()
    assert from_file.train.learning_rate == from_set.train.learning_rate == cells[0].config.train.learning_rate \
        == expected
    assert cells[1].config.train.learning_rate == 1e-3 and cells[0].config.adapter["orth_reg_weight"] == expected


def test_quoted_numbers_and_words_stay_strings():
    from triadapt_runner.yamlfile import load_yaml

    assert load_yaml("a: '1e-4'\nb: e4\nc: 1e\nd: 12\ne: v1e3") == {"a": "1e-4", "b": "e4", "c": "1e", "d": 12,
                                                                    "e": "v1e3"}


def test_a_good_config_passes_the_same_checks(tmp_path, populated_store, capsys):
    """The control: the same command with a valid config gets past every check (here: `ablate --dry-run`)."""
    grid = write_yaml(tmp_path / "g.yaml", {"name": "ok", "base": {"task": "rotten_tomatoes", **TINY}})
    before = store_snapshot(populated_store)
    assert run_main(["ablate", grid, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 cells" in out and "T=3, 36 matrices" in out and "INVALID" not in out
    assert store_snapshot(populated_store) == before
