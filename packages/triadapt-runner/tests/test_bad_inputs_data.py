"""Bad data files: exit 2, one line naming the file (and the column or line), no MLflow run created or changed."""

import json

import pytest

from conftest import TINY, assert_bad_input, write_yaml
from glue_fixtures import write_glue
from squad_fixture import squad_v2

GOOD_CSV = "text,label\ngood film,1\nbad film,0\nfine film,1\n"


def custom(train: str, validation: str = "ok.csv", **data) -> dict:
    return {"task": "custom", "train_file": train, "validation_file": validation, **data}


def _squad(change):
    data = squad_v2()
    change(data)
    return json.dumps(data)


def _move_answer(data):
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 3


# (id, files to write {name: text}, data section, pattern)
CASES = [
    ("empty-csv", {"t.csv": ""}, custom("t.csv"), r"t.csv: the file is empty \(no header, no rows\)"),
    ("blank-csv", {"t.csv": "\n\n"}, custom("t.csv"), r"t.csv: the file is empty"),
    ("header-only-csv", {"t.csv": "text,label\n"}, custom("t.csv"), r"t.csv: the file has a header but no rows"),
    ("header-only-validation", {"v.csv": "text,label\n"}, custom("ok.csv", "v.csv"),
     r"v.csv: the file has a header but no rows"),
    ("empty-json-list", {"t.json": "[]"}, custom("t.json"), r"t.json: the file has no rows"),
    ("broken-json", {"t.json": "{\"text\": "}, custom("t.json"), r"t.json: not valid JSON or JSON Lines \(line 1: "),
    ("broken-jsonl-line", {"t.jsonl": '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n'}, custom("t.jsonl"),
     r"t.jsonl: not valid JSON or JSON Lines \(line 2: Expecting property name"),
    ("missing-train-file", {}, custom("none.csv"), r"data.train_file='none.csv' is invalid: no such file"),
    ("missing-validation-file", {}, custom("ok.csv", "none.csv"),
     r"data.validation_file='none.csv' is invalid: no such file"),
    ("unknown-format", {"t.xlsx": "x"}, custom("t.xlsx"), r"data.train_file='t.xlsx' is invalid: use one of the "
                                                          r"formats .csv"),
    ("missing-label-column", {"t.csv": "text,stars\na,1\n"}, custom("t.csv"),
     r"data.label_column='label' is invalid: t.csv has columns text, stars"),
    ("missing-text-column", {"t.csv": "review,label\na,1\n"}, custom("t.csv"),
     r"data.text_column='text' is invalid: t.csv has columns review, label"),
    ("missing-pair-column", {"t.csv": "text,label\na,1\n"}, custom("t.csv", kind="pair", text_pair_column="hyp"),
     r"data.text_pair_column='hyp' is invalid: t.csv has columns text, label"),
    ("label-not-integer", {"t.csv": "text,label\na,positive\n"}, custom("t.csv"),
     r"t.csv: label 'positive' in column 'label' is not an integer class id"),
    ("negative-class", {"t.csv": "text,label\na,-1\nb,0\n"}, custom("t.csv"), r"t.csv: class ids must be >= 0, found -1"),
    ("regression-label", {"t.csv": "text,label\na,high\n"}, custom("t.csv", kind="regression"),
     r"t.csv: label 'high' in column 'label' is not a number"),
    ("custom-without-validation", {}, {"task": "custom", "train_file": "ok.csv"},
     r"data.train_file='ok.csv' is invalid: task 'custom' needs data.train_file and data.validation_file"),
    ("squad-not-json", {"s.json": "not json"}, {"task": "squad_v2", "train_file": "s.json", "validation_file": "s.json"},
     r"s.json: not a SQuAD JSON file"),
    ("squad-without-data", {"s.json": "{\"version\": 2}"},
     {"task": "squad_v2", "train_file": "s.json", "validation_file": "s.json"}, r"s.json: not a SQuAD JSON file"),
    ("squad-answer-misplaced", {"s.json": _squad(_move_answer)},
     {"task": "squad_v2", "train_file": "s.json", "validation_file": "s.json"},
     r"s.json: question 'q0-city': answer 'Warsaw' is not at"),
    ("squad-missing-file", {}, {"task": "squad_v2", "train_file": "none.json", "validation_file": "none.json"},
     r"none.json: SQuAD file not found"),
    ("squad-only-train", {"s.json": _squad(lambda d: None)}, {"task": "squad_v2", "train_file": "s.json"},
     r"data.validation_file=None is invalid: give both data.train_file and data.validation_file"),
    ("glue-missing-dev", {"GLUE": "RTE/dev.tsv"}, {"task": "rte", "glue_dir": "glue"},
     r"RTE/dev.tsv: not found; the GLUE layout for 'rte'"),
    ("glue-bad-label", {"GLUE": "QNLI/train.tsv=index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n"},
     {"task": "qnli", "glue_dir": "glue"}, r"QNLI/train.tsv:2: malformed row \(label 'maybe' is not one of"),
    ("glue-missing-column", {"GLUE": "SST-2/train.tsv=sentence\tscore\na\t1\n"}, {"task": "sst2", "glue_dir": "glue"},
     r"SST-2/train.tsv: column 'label' not found"),
]


def _write(tmp_path, files):
    (tmp_path / "ok.csv").write_text(GOOD_CSV)
    for name, text in files.items():
        if name == "GLUE":  # "Task/file" removed, or "Task/file=content" replaced, in a written GLUE folder
            root = write_glue(tmp_path / "glue")
            target, _, content = text.partition("=")
            (root / target).unlink() if not content else (root / target).write_text(content)
            continue
        (tmp_path / name).write_text(text)


@pytest.mark.parametrize("files,data,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_file(files, data, pattern, tmp_path, populated_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    base = {**TINY, "data": {**TINY["data"], **data}}
    config = write_yaml(tmp_path / "run.yaml", base)
    assert_bad_input(["train", "--config", config, "--tracking-uri", populated_store, "--no-progress"], pattern,
                     populated_store, capsys)


def test_bad_data_file_in_a_grid_names_the_cell(tmp_path, populated_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, {"t.csv": "text,label\n"})
    grid = write_yaml(tmp_path / "g.yaml", {"name": "files", "base": {**TINY, "data": {**TINY["data"], **custom(
        "t.csv")}}})
    assert_bad_input(["ablate", grid, "--tracking-uri", populated_store], r"g.yaml: 1 of 1 cells are invalid .*"
                     r"t.csv: the file has a header but no rows", populated_store, capsys)
