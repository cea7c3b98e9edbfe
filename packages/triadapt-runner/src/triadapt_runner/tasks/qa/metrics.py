"""SQuAD 2.0 evaluation, implemented from the definition of the official script.

Answers are normalised (lower case, punctuation and the articles a / an / the removed,
whitespace collapsed). Exact match and token F1 take the maximum over the gold answers; an
unanswerable question has the single gold answer "" (so only an empty prediction scores).
Scores are reported in percent, overall and split into HasAns / NoAns.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # an empty side scores 1 only if both are empty
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answer_texts: Iterable[str]) -> list[str]:
    """Gold answers that normalise to something; [""] for an unanswerable question."""
    golds = [a for a in answer_texts if normalize_answer(a)]
    return golds or [""]


def squad_v2_scores(examples: Iterable[Mapping], predictions: Mapping[str, str]) -> dict[str, float]:
    """``examples`` have ``id`` and ``answers['text']``; ``predictions`` map id -> answer text ("" = no answer)."""
    exact, f1, has_answer = {}, {}, {}
    for example in examples:
        qid = example["id"]
        if qid not in predictions:
            raise KeyError(f"no prediction for question id {qid!r}")
        golds = gold_answers(example["answers"]["text"])
        has_answer[qid] = golds != [""]
        exact[qid] = max(exact_match(predictions[qid], g) for g in golds)
        f1[qid] = max(token_f1(predictions[qid], g) for g in golds)
    return _summarise(exact, f1, has_answer)


def _summarise(exact: dict, f1: dict, has_answer: dict) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return 100.0 * sum(values) / len(values)

    out = {"exact": mean(list(exact.values())), "f1": mean(list(f1.values())), "total": float(len(exact))}
    for label, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [q for q, h in has_answer.items() if h == wanted]
        if ids:
            out[f"{label}_exact"] = mean([exact[q] for q in ids])
            out[f"{label}_f1"] = mean([f1[q] for q in ids])
            out[f"{label}_total"] = float(len(ids))
    return out
