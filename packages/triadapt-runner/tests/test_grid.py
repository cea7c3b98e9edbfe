"""Grid expansion: product and zip axes, seeds, deterministic cell ids; the shipped grids parse."""

from pathlib import Path

import pytest

from conftest import TINY
from triadapt_runner.grid.spec import load_grid, parse_grid

ABLATIONS = Path(__file__).resolve().parents[3] / "benchmarks" / "ablations"


def test_product_zip_and_seeds_expand():
    spec = parse_grid({"name": "g", "base": {"task": "rotten_tomatoes", **TINY},
                       "axes": [{"product": {"task": ["rotten_tomatoes", "drug_reviews"]}},
                                {"zip": {"method": ["a", "b", "c"], "adapter.init_rank": [1, 2, 3]}}],
                       "seeds": [0, 1]})
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 2
    assert [(c.task, c.method, c.config.adapter["init_rank"], c.seed) for c in cells[:3]] == [
        ("rotten_tomatoes", "a", 1, 0), ("rotten_tomatoes", "a", 1, 1), ("rotten_tomatoes", "b", 2, 0)]
    assert len({c.id for c in cells}) == 12


def test_cell_ids_are_deterministic_and_follow_the_config():
    grid = {"name": "g", "base": {"task": "rotten_tomatoes"}, "seeds": [0, 1]}
    first, again = parse_grid(grid).cells(), parse_grid(grid).cells()
    assert [c.id for c in first] == [c.id for c in again]
    changed = parse_grid({**grid, "base": {"task": "rotten_tomatoes", "train": {"epochs": 2}}}).cells()
    assert {c.id for c in changed}.isdisjoint(c.id for c in first)
    assert parse_grid(grid).spec_hash != parse_grid({**grid, "seeds": [0]}).spec_hash


def test_cell_ids_survive_a_release_that_adds_a_config_field():
    """A new field with a default must not change finished cells' ids, or a rerun would not resume."""
    import dataclasses

    from triadapt_runner.config import RunConfig, TrainConfig

    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", "train": {"epochs": 2, "learning_rate": 1e-3}})
    newer_train = dataclasses.make_dataclass("NewerTrain", [("new_flag", bool, dataclasses.field(default=False))],
                                             bases=(TrainConfig,))
    newer = dataclasses.replace(cfg, train=newer_train(**dataclasses.asdict(cfg.train)))
    assert newer.config_hash(with_seed=True) == cfg.config_hash(with_seed=True)
    newer.train.new_flag = True
    assert newer.config_hash(with_seed=True) != cfg.config_hash(with_seed=True)
    # a value written out at its default is the same config; the seed counts only when asked
    explicit = RunConfig.from_dict({"task": "rotten_tomatoes", "train": {"epochs": 2, "learning_rate": 1e-3,
                                                                         "max_grad_norm": TrainConfig().max_grad_norm}})
    assert explicit.config_hash(with_seed=True) == cfg.config_hash(with_seed=True)
    other_seed = RunConfig.from_dict({"task": "rotten_tomatoes", "train": {"epochs": 2, "learning_rate": 1e-3,
                                                                           "seed": 7}})
    assert other_seed.config_hash() == cfg.config_hash()
    assert other_seed.config_hash(with_seed=True) != cfg.config_hash(with_seed=True)


@pytest.mark.parametrize("path", sorted(ABLATIONS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_grids_parse(path, triadapt_registry):  # with the installed plugins (the IncreLoRA-style row's scorer)
    spec = load_grid(path)
    assert spec.cells() and len(spec.seeds) == 3


def test_paper_glue_recipes_follow_table_v(triadapt_registry):  # the IncreLoRA-style rows need the plugin
    spec = load_grid(ABLATIONS / "paper-glue-rte.yaml")
    cell = next(c for c in spec.cells() if c.method == "TriAdaptLoRA linear")
    assert (cell.config.train.epochs, cell.config.train.learning_rate, cell.config.data.max_length) == (50, 1.2e-3, 320)
    assert cell.config.adapter["orth_reg_weight"] == 0.3 and cell.config.adapter["warmup_steps"] == 100
    assert {load_grid(p).base["task"] for p in ABLATIONS.glob("paper-glue-*.yaml")} == {
        "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"}


def test_paper_squad_recipe_follows_table_vi(triadapt_registry):
    cell = load_grid(ABLATIONS / "paper-squad-v2.yaml").cells()[1]
    assert (cell.task, cell.config.data.max_length, cell.config.data.doc_stride) == ("squad_v2", 384, 128)
    assert (cell.config.train.epochs, cell.config.train.batch_size, cell.config.adapter["dropout"]) == (14, 16, 0.1)


def test_tracking_uri_defaults(monkeypatch, tmp_path):
    from triadapt_runner.tracking.runs import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert default_tracking_uri() == "http://127.0.0.1:5999"


def test_the_adapter_config_is_resolved_once_per_cell(monkeypatch):
    """Checks, plan, attach and tags of a cell all get one resolved TriAdaptConfig per T (not one each)."""
    from triadapt import TriAdaptConfig
    from triadapt_runner.config import RunConfig

    built = []
    original = TriAdaptConfig.from_dict.__func__
    monkeypatch.setattr(TriAdaptConfig, "from_dict", classmethod(lambda cls, d: built.append(d) or original(cls, d)))
    cfg = RunConfig.from_dict({"task": "rotten_tomatoes", "adapter": {"ref_rank": 2}})
    first = len(built)
    assert cfg.adapter_config(None) is cfg.adapter_config(None) and len(built) == first
    with_t = cfg.adapter_config(100)
    assert with_t is cfg.adapter_config(100) and with_t.total_steps == 100 and len(built) == first + 1
    assert cfg.adapter_config(200) is not with_t  # another T: another config
