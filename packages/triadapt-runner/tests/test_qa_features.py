"""Pre/post-processing round trip: gold spans encoded into windows and decoded back give EM = 100."""

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from squad_fixture import squad_v2
from triadapt_runner.tasks.data.squad import read_squad_json
from triadapt_runner.errors import RunnerError
from triadapt_runner.tasks.qa.features import QASettings, eval_features, postprocess, train_features
from triadapt_runner.tasks.qa.metrics import squad_v2_scores
from triadapt_runner.models import model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(model_path("minilm"))


@pytest.mark.parametrize("long_context,max_length,stride", [(False, 384, 128), (True, 64, 24)])
def test_round_trip_gives_exact_match_100(tokenizer, tmp_path, long_context, max_length, stride):
    path = tmp_path / "squad.json"
    import json

    path.write_text(json.dumps(squad_v2(long_context)))
    examples = datasets.Dataset.from_list(read_squad_json(path))
    settings = QASettings(max_length=max_length, doc_stride=stride)
    batch = examples[:]
    labelled = train_features(batch, tokenizer, settings)
    features = eval_features(batch, tokenizer, settings)
    assert len(labelled["input_ids"]) == len(features["input_ids"])
    if long_context:
        assert len(features["input_ids"]) > 2 * len(examples)  # several windows per question
    starts, ends = [], []
    for s, e, ids in zip(labelled["start_positions"], labelled["end_positions"], labelled["input_ids"]):
        start, end = np.zeros(len(ids)), np.zeros(len(ids))
        start[s], end[e] = 10.0, 10.0  # logits peaked at the gold labels ([CLS] when no answer in the window)
        starts.append(start)
        ends.append(end)
    predictions = postprocess(examples, features, starts, ends, settings)
    scores = squad_v2_scores(examples, predictions)
    assert scores["exact"] == 100.0 and scores["NoAns_total"] == 6
    assert predictions["q0-city"] == "Warsaw" and predictions["q0-pet"] == ""


def test_answer_not_at_its_offset_is_refused(tmp_path):
    import json

    data = squad_v2()
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(RunnerError, match="question 'q0-city': answer 'Warsaw' is not at character 3"):
        read_squad_json(tmp_path / "bad.json")
