"""SQuAD 2.0 metrics on hand-made predictions."""

import pytest

from triadapt_runner.tasks.qa.metrics import normalize_answer, squad_v2_scores, token_f1


def ex(qid, *answers):
    return {"id": qid, "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The Eiffel-Tower, in  PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"


def test_token_f1_by_hand():
    # prediction "the big red house" -> big red house (3), gold "red house" (2): overlap 2, P 2/3, R 1, F1 0.8
    assert token_f1("the big red house", "red house") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_scores_with_unanswerable_and_multiple_gold_answers():
    examples = [ex("a", "Paris"), ex("b", "1867", "in 1867"), ex("c"), ex("d"), ex("e", "red house")]
    predictions = {"a": "paris.", "b": "born in 1867", "c": "", "d": "London", "e": "the big red house"}
    scores = squad_v2_scores(examples, predictions)
    # exact: a 1, b 0, c 1, d 0, e 0 -> 40 %; f1: a 1, b max(0.5, 0.8) = 0.8, c 1, d 0, e 0.8 -> 72 %
    assert scores["exact"] == pytest.approx(40.0) and scores["f1"] == pytest.approx(72.0)
    assert scores["HasAns_exact"] == pytest.approx(100 / 3) and scores["HasAns_f1"] == pytest.approx(260 / 3)
    assert scores["NoAns_exact"] == pytest.approx(50.0) and scores["NoAns_f1"] == pytest.approx(50.0)
    assert (scores["total"], scores["HasAns_total"], scores["NoAns_total"]) == (5, 3, 2)


def test_gold_answers_that_normalise_to_nothing_count_as_unanswerable():
    assert squad_v2_scores([ex("x", "the")], {"x": ""})["exact"] == 100.0


def test_missing_prediction_is_named():
    with pytest.raises(KeyError, match="no prediction for question id 'z'"):
        squad_v2_scores([ex("z", "a")], {})
