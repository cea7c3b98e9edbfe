"""SQuAD 1.1 / 2.0 in the official JSON format, as flat rows (id, question, context, answers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from triadapt_runner.errors import RunnerError


def load_squad(task: Any, data: Any) -> dict[str, list[dict]]:
    """A SQuAD task's splits: ``data.train_file`` and ``data.validation_file`` when given, else the hub."""
    if data.train_file or data.validation_file:
        return {"train": read_squad_json(data.train_file), "validation": read_squad_json(data.validation_file)}
    import datasets

    path, _ = task.hub
    try:
        loaded = datasets.load_dataset(path)
    except Exception as exc:
        raise RunnerError(f"task {task.name!r}: cannot load {path} from the hub ({type(exc).__name__}); offline, "
                          f"pass data.train_file and data.validation_file in the official SQuAD JSON format") from None
    columns = ("id", "question", "context", "answers")
    return {split: [{c: row[c] for c in columns} for row in loaded[split]] for split in ("train", "validation")}


def read_squad_json(path: str | Path) -> list[dict]:
    """Rows with ``answers = {"text": [...], "answer_start": [...]}``; empty for unanswerable questions."""
    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"{path}: SQuAD file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunnerError(f"{path}: not a SQuAD JSON file (expected {{\"data\": [{{\"paragraphs\": ...}}]}}; "
                          f"{type(exc).__name__}: {exc})") from None
    rows = []
    for article in data:
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                for answer in answers:
                    start = answer["answer_start"]
                    if context[start:start + len(answer["text"])] != answer["text"]:
                        raise RunnerError(f"{path}: question {qa['id']!r}: answer {answer['text']!r} is not at "
                                          f"character {start} of its context")
                rows.append({"id": str(qa["id"]), "title": article.get("title", ""), "question": qa["question"],
                             "context": context,
                             "answers": {"text": [a["text"] for a in answers],
                                         "answer_start": [int(a["answer_start"]) for a in answers]}})
    if not rows:
        raise RunnerError(f"{path}: no questions found")
    return rows
