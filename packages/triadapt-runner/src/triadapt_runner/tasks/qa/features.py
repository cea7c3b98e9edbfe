"""SQuAD features: sliding windows over the context, answer-span labels, and decoding back to text.

A question with a long context becomes several features (windows of ``max_length`` tokens
overlapping by ``doc_stride``). A window that does not contain the whole answer, and every
window of an unanswerable question, is labelled with the [CLS] position (index 0).
Post-processing scores the ``n_best`` start and end positions of every window, keeps
valid spans inside the context, and compares the best span with the null score
(start and end logits at [CLS]) of the question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QASettings:
    max_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0  # predict "" when null score > best span score + threshold
    version_2: bool = True  # SQuAD 2.0: unanswerable questions exist


def _tokenize(tokenizer: Any, examples: dict[str, list], settings: QASettings) -> Any:
    questions = [q.lstrip() for q in examples["question"]]
    return tokenizer(questions, examples["context"], truncation="only_second", max_length=settings.max_length,
                     stride=settings.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                     padding=False)


def train_features(examples: dict[str, list], tokenizer: Any, settings: QASettings) -> dict[str, list]:
    """Tokenised windows with ``start_positions`` / ``end_positions`` (0 = no answer in the window)."""
    enc = _tokenize(tokenizer, examples, settings)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        example = enc["overflow_to_sample_mapping"][i]
        answers = examples["answers"][example]
        sequence_ids = enc.sequence_ids(i)
        if not answers["text"]:
            starts.append(0)
            ends.append(0)
            continue
        char_start = answers["answer_start"][0]
        char_end = char_start + len(answers["text"][0])
        context = [k for k, s in enumerate(sequence_ids) if s == 1]
        first, last = context[0], context[-1]
        if offsets[first][0] > char_start or offsets[last][1] < char_end:
            starts.append(0)  # the answer is not entirely inside this window
            ends.append(0)
            continue
        token_start = first
        while token_start <= last and offsets[token_start][0] <= char_start:
            token_start += 1
        token_end = last
        while token_end >= first and offsets[token_end][1] >= char_end:
            token_end -= 1
        starts.append(token_start - 1)
        ends.append(token_end + 1)
    enc["start_positions"], enc["end_positions"] = starts, ends
    enc.pop("offset_mapping")
    enc.pop("overflow_to_sample_mapping")
    return dict(enc)


def eval_features(examples: dict[str, list], tokenizer: Any, settings: QASettings) -> dict[str, list]:
    """Tokenised windows with ``example_id`` and offsets kept only for context tokens (None elsewhere)."""
    enc = _tokenize(tokenizer, examples, settings)
    ids, offsets_out = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        sequence_ids = enc.sequence_ids(i)
        ids.append(examples["id"][enc["overflow_to_sample_mapping"][i]])
        offsets_out.append([o if sequence_ids[k] == 1 else None for k, o in enumerate(offsets)])
    enc["example_id"], enc["offset_mapping"] = ids, offsets_out
    enc.pop("overflow_to_sample_mapping")
    return dict(enc)


def postprocess(examples: Any, features: Any, start_logits: list[np.ndarray], end_logits: list[np.ndarray],
                settings: QASettings) -> dict[str, str]:
    """Answer text per question id ("" for no answer) from per-feature start / end logits."""
    by_example: dict[str, list[int]] = {}
    for index, example_id in enumerate(features["example_id"]):
        by_example.setdefault(example_id, []).append(index)
    predictions = {}
    for example in examples:
        best_text, best_score, null_score = "", -np.inf, np.inf
        for index in by_example.get(example["id"], []):
            starts, ends = np.asarray(start_logits[index]), np.asarray(end_logits[index])
            offsets = features["offset_mapping"][index]
            null_score = min(null_score, float(starts[0] + ends[0]))  # the most confident window decides
            for s in np.argsort(starts)[::-1][: settings.n_best]:
                for e in np.argsort(ends)[::-1][: settings.n_best]:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > settings.max_answer_length:
                        continue
                    score = float(starts[s] + ends[e])
                    if score > best_score:
                        best_score, best_text = score, example["context"][offsets[s][0]: offsets[e][1]]
        if settings.version_2 and (best_score == -np.inf or null_score > best_score + settings.null_threshold):
            best_text = ""
        predictions[example["id"]] = best_text
    return predictions
