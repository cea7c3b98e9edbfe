"""A small synthetic SQuAD 2.0 file in the official format (answerable and unanswerable questions)."""

import json
from pathlib import Path

FACTS = [
    ("Marie Curie", "Warsaw", "1867", "physics and chemistry"),
    ("Alan Turing", "London", "1912", "mathematics"),
    ("Ada Lovelace", "London", "1815", "mathematics"),
    ("Niels Bohr", "Copenhagen", "1885", "physics"),
    ("Rosalind Franklin", "London", "1920", "chemistry"),
    ("Enrico Fermi", "Rome", "1901", "physics"),
]
FILLER = " The archive holds letters, notebooks and photographs from many decades of work." * 12


def squad_v2(long_context: bool = False) -> dict:
    data = []
    for i, (name, city, year, field) in enumerate(FACTS):
        context = f"{name} was born in {city} in {year}. {name} worked on {field}."
        if long_context:
            context = FILLER + " " + context  # forces several windows at a short max_length
        start = context.index(city)
        qas = [
            {"id": f"q{i}-city", "question": f"Where was {name} born?",
             "answers": [{"text": city, "answer_start": start}], "is_impossible": False},
            {"id": f"q{i}-year", "question": f"In which year was {name} born?",
             "answers": [{"text": year, "answer_start": context.index(year)},
                         {"text": f"in {year}", "answer_start": context.index(f"in {year}")}],
             "is_impossible": False},
            {"id": f"q{i}-pet", "question": f"What was the name of {name}'s dog?", "answers": [],
             "plausible_answers": [{"text": city, "answer_start": start}], "is_impossible": True},
        ]
        data.append({"title": name, "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "v2.0", "data": data}


def write_squad(path: Path, long_context: bool = False) -> Path:
    path.write_text(json.dumps(squad_v2(long_context)))
    return path
