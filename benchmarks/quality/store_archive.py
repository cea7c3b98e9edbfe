"""Keep a results store across machines: pack an MLflow sqlite store (its `mlflow.db` and `mlartifacts/`) into one
archive, and unpack it anywhere, with the artifact paths rewritten to where it now lies.

A grid's store is what makes it resumable; it is an ignored file, lost with the checkout or the machine that ran it.
The archive keeps what resuming, `triadapt compare`, the selection and the rank figure need (every run, its params,
tags and metrics; `selection.json`, `final_ranks.json`, `growth_events.json`, the configs) and leaves out what can be
remade or is large (`adapter/`, `eval_logits.json`, `rank_heatmap.png`, `rank_trajectory.csv`).

    python benchmarks/quality/store_archive.py pack DIR ARCHIVE.tar.xz
    python benchmarks/quality/store_archive.py unpack ARCHIVE.tar.xz DIR
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NoReturn

LEFT_OUT = {"eval_logits.json", "rank_heatmap.png", "rank_trajectory.csv"}
ROOT_FILE = "packed_root.json"  # the folder the store was packed from: its prefix in the stored artifact paths


def pack(folder: Path, archive: Path) -> int:
    """The archive is written beside its place and moved there once complete: a failed pack leaves the old one."""
    folder = folder.resolve()
    if not (folder / "mlflow.db").is_file():
        _fail(f"{folder / 'mlflow.db'} does not exist: give the folder of a store")
    count = 0
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:xz") as tar:
        tar.add(folder / "mlflow.db", arcname="mlflow.db")
        for path in sorted((folder / "mlartifacts").rglob("*")):
            parts = path.relative_to(folder).parts
            if path.is_file() and path.name not in LEFT_OUT and "adapter" not in parts:
                tar.add(path, arcname=str(Path(*parts)))
                count += 1
        data = json.dumps({"root": folder.as_uri()}).encode()
        info = tarfile.TarInfo(ROOT_FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    os.replace(partial, archive)
    return count


def unpack(archive: Path, folder: Path) -> int:
    """Extracted beside ``folder`` and moved there once the paths are rewritten: a failed unpack leaves nothing."""
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        _fail(f"{folder} is not empty: unpack into a new or empty folder")
    with tempfile.TemporaryDirectory(dir=folder.parent if folder.parent.exists() else None) as tmp:
        staging = Path(tmp) / "store"
        try:
            with tarfile.open(archive, "r:xz") as tar:
                tar.extractall(staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            old = json.loads((staging / ROOT_FILE).read_text())["root"]
        except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
            _fail(f"{archive} is not a store archive made by `pack` ({type(exc).__name__}: {exc})")
        (staging / ROOT_FILE).unlink()
        with sqlite3.connect(staging / "mlflow.db") as db:
            changed = 0
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                update = f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE instr({column}, ?) = 1"
                changed += db.execute(update, (folder.as_uri(), len(old) + 1, old)).rowcount
        if folder.exists():
            folder.rmdir()
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), folder)
    return changed


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"store_archive: error: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("pack")
    p.add_argument("folder", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("archive", type=Path)
    u.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.action == "pack":
        print(f"packed {pack(args.folder, args.archive)} artifact files and the database into {args.archive}")
    else:
        print(f"unpacked into {args.folder}; {unpack(args.archive, args.folder)} artifact paths now point there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
