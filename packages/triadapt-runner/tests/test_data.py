"""Data loading: GLUE local layout, user files, built-in datasets, deterministic splits."""

import json

import pytest

from glue_fixtures import S1, S2, write_glue
from triadapt_runner.config import DataConfig
from triadapt_runner.tasks.data import builtin
from triadapt_runner.tasks.data.loading import load_task
from triadapt_runner.errors import RunnerError

EXPECTED_TRAIN_FIRST = {
    "cola": {"text": "Our friends won't buy this analysis.", "label": 1},
    "sst2": {"text": "hide new secretions from the parental units ", "label": 0},
    "mrpc": {"text": S1, "text_pair": S2, "label": 1},
    "qqp": {"text": "How is life?", "text_pair": "What is life?", "label": 0},
    "stsb": {"text": "A plane is taking off.", "text_pair": "An air plane is taking off.", "label": 5.0},
    "mnli": {"text": S1, "text_pair": S2, "label": 1},  # neutral = 1 in the hub's label order
    "qnli": {"text": "When?", "text_pair": "In 1990.", "label": 0},
    "rte": {"text": S1, "text_pair": S2, "label": 1},  # not_entailment = 1
}


@pytest.mark.parametrize("task", sorted(EXPECTED_TRAIN_FIRST))
def test_glue_local_layout(task, tmp_path):
    spec, splits = load_task(DataConfig(task=task, glue_dir=str(write_glue(tmp_path))))
    assert splits["train"][0] == EXPECTED_TRAIN_FIRST[task]
    assert len(splits["validation"]) >= 1 and spec.name == task


def test_glue_dev_labels_and_quotes(tmp_path):
    root = write_glue(tmp_path)
    _, mnli = load_task(DataConfig(task="mnli", glue_dir=str(root)))
    assert mnli["validation"][0]["label"] == 2  # contradiction, from gold_label of dev_matched.tsv
    _, sst2 = load_task(DataConfig(task="sst2", glue_dir=str(root)))
    assert sst2["train"][1]["text"] == S1  # a literal quote survives (no CSV quoting in GLUE files)
    _, stsb = load_task(DataConfig(task="stsb", glue_dir=str(root)))
    assert stsb["validation"][0]["label"] == pytest.approx(0.5)


def test_glue_missing_file_is_named(tmp_path):
    root = write_glue(tmp_path)
    (root / "RTE" / "dev.tsv").unlink()
    with pytest.raises(RunnerError, match=r"RTE/dev.tsv: not found; the GLUE layout for 'rte'"):
        load_task(DataConfig(task="rte", glue_dir=str(root)))


def test_glue_bad_label_names_line(tmp_path):
    root = write_glue(tmp_path)
    (root / "QNLI" / "train.tsv").write_text("index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n")
    with pytest.raises(RunnerError, match=r"QNLI/train.tsv:2: malformed row \(label 'maybe' is not one of"):
        load_task(DataConfig(task="qnli", glue_dir=str(root)))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_custom_files_with_column_mapping(fmt, tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"review": ["good", "bad", "fine"], "stars": [1, 0, 2], "other": [0, 0, 0]})
    paths = {}
    for split in ("train", "validation"):
        paths[split] = tmp_path / f"{split}.{fmt}"
        {"csv": lambda p: frame.to_csv(p, index=False), "json": lambda p: frame.to_json(p, orient="records",
                                                                                       lines=True),
         "parquet": lambda p: frame.to_parquet(p)}[fmt](paths[split])
    spec, splits = load_task(DataConfig(task="custom", train_file=str(paths["train"]),
                                        validation_file=str(paths["validation"]), text_column="review",
                                        label_column="stars"))
    assert splits["train"][1] == {"text": "bad", "label": 0}
    assert spec.num_labels == 3 and spec.metrics == ("accuracy", "macro_f1")


def test_custom_wrong_column_lists_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("review,stars\ngood,1\n")
    with pytest.raises(RunnerError, match="data.label_column='label' is invalid: .*t.csv has columns review, stars"):
        load_task(DataConfig(task="custom", train_file=str(path), validation_file=str(path), text_column="review"))


def test_builtin_rotten_tomatoes_is_real_and_split_deterministically():
    path = builtin.fetch("rotten_tomatoes")
    assert builtin._sha256(path.read_bytes()) == builtin.SOURCES["rotten_tomatoes"].sha256
    rows = builtin.read_rotten_tomatoes(path)
    assert len(rows) == 12808 and sum(r["label"] for r in rows) == 7403
    first = load_task(DataConfig(task="rotten_tomatoes", max_train_samples=5))[1]
    second = load_task(DataConfig(task="rotten_tomatoes", max_train_samples=5))[1]
    assert first["train"].to_list() == second["train"].to_list()
    assert len(first["validation"]) == 1281


def test_builtin_drug_reviews():
    spec, splits = load_task(DataConfig(task="drug_reviews"))
    assert (len(splits["train"]), len(splits["validation"]), spec.num_labels) == (600, 379, 3)
    assert sorted(set(splits["train"]["label"])) == [0, 1, 2]


def test_corrupted_cache_is_refetched(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIADAPT_CACHE", str(tmp_path))
    target = builtin.cached_path("drug_reviews")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the file")
    assert builtin.fetch("drug_reviews") == target
    assert builtin._sha256(target.read_bytes()) == builtin.SOURCES["drug_reviews"].sha256


def test_unknown_builtin():
    with pytest.raises(RunnerError, match="dataset='imdb' is not built in: built-in datasets are drug_reviews, "
                                          "rotten_tomatoes"):
        builtin.fetch("imdb")


def test_task_declarations_cover_the_paper():
    from triadapt_runner.tasks.specs import GLUE_TASKS, TASKS

    assert {TASKS[t].main_metric for t in GLUE_TASKS} == {"accuracy", "matthews", "pearson"}
    assert json.dumps([TASKS[t].hub for t in GLUE_TASKS])  # every GLUE task names its hub dataset


def test_hub_unreachable_offline_names_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunnerError, match="task 'rte': cannot load nyu-mll/glue/rte from the hub .*pass data.glue_dir"):
        load_task(DataConfig(task="rte"))
    with pytest.raises(RunnerError, match="task 'squad_v2': cannot load rajpurkar/squad_v2 .*data.train_file"):
        load_task(DataConfig(task="squad_v2"))


def test_custom_regression_reads_float_labels_and_scores_by_correlation(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,score\nx,y,0.5\nz,w,4\n")
    spec, splits = load_task(DataConfig(task="custom", kind="regression", train_file=str(path),
                                        validation_file=str(path), text_column="a", text_pair_column="b",
                                        label_column="score"))
    assert splits["train"][0] == {"text": "x", "text_pair": "y", "label": 0.5}
    assert (spec.kind, spec.num_labels, spec.metrics, spec.main_metric) == ("regression", 1, ("pearson", "spearman"),
                                                                            "pearson")


@pytest.mark.parametrize("kind,text,row,metrics", [
    ("sft", "prompt,response\np,r\n", {"prompt": "p", "response": "r"}, ("loss", "perplexity")),
    ("lm", "text\nsome text\n", {"text": "some text"}, ("loss", "perplexity")),
    ("pair", "text,hyp,label\nx,y,1\nz,w,0\n", {"text": "x", "text_pair": "y", "label": 1}, ("accuracy", "f1")),
])
def test_custom_files_are_read_by_their_kind(kind, text, row, metrics, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(text)
    spec, splits = load_task(DataConfig(task="custom", kind=kind, train_file=str(path), validation_file=str(path),
                                        text_pair_column="hyp"))
    assert splits["train"][0] == row and spec.metrics == metrics and spec.kind == kind


def test_data_kind_is_for_custom_data():
    """The default data.kind never clashes with a built-in task; the task's own kind is accepted; another is refused."""
    assert DataConfig(task="mrpc").kind == "single"  # the default, with a pair task: not a choice of the user
    DataConfig(task="rotten_tomatoes", kind="single")
    DataConfig(task="rotten_tomatoes_sft", kind="sft")
    with pytest.raises(RunnerError, match=r"^data.kind='lm' is invalid: task 'rotten_tomatoes_sft' is built in, of "
                                          r"kind 'sft'; data.kind is for custom data \(data.task=custom\)$"):
        DataConfig(task="rotten_tomatoes_sft", kind="lm")


@pytest.mark.parametrize("value", ["abc", None, [0.1], True])
def test_validation_fraction_must_be_a_number(value):
    with pytest.raises(RunnerError, match=r"^data.validation_fraction=.* is invalid: must be a number in \(0, 1\)$"):
        DataConfig(validation_fraction=value)
