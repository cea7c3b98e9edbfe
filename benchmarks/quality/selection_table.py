"""The value each row of a grid chose (its `selection.json`), as a Markdown table: row, task, scores, chosen.

    python benchmarks/quality/selection_table.py --grid offline-tables [--tracking-uri URI] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from triadapt_runner.tracking.compare import parent_of
from triadapt_runner.tracking.runs import Tracker, experiments_with_grid


def table(tracker: Tracker, grid: str) -> str:
    parent = parent_of(tracker, grid)
    with tempfile.TemporaryDirectory() as tmp:
        report = json.loads(Path(tracker.client.download_artifacts(parent, "selection.json", tmp)).read_text())
    axis = report["select"]["axis"]
    values = [repr(v) for v in report["select"]["values"]]
    lines = ["| row | task | " + " | ".join(f"{axis}={v}" for v in values) + " | chosen |",
             "|---|---|" + "---|" * len(values) + "---|"]
    for row, entry in report["rows"].items():
        keys = json.loads(row)
        scores = [entry["scores"].get(v) for v in values]
        cells = ["—" if s is None else f"{abs(s) * 100:.1f}" for s in scores]
        lines.append(f"| {keys.get('method', row)} | {keys.get('task', '')} | " + " | ".join(cells)
                     + f" | {entry['chosen']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    (experiment,) = experiments_with_grid(args.tracking_uri, args.grid)
    text = table(Tracker(args.tracking_uri, experiment, create=False), args.grid)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
