"""Write every table and every measured number of docs/results.md (and the demo's time in README.md) from the
committed result stores.

Each generated value sits between two markers in the page, which nobody edits by hand:

    <!-- results:dr.linear-vs-lora -->+2.64, p = 0.023<!-- /results -->

(a table is a block: its markers on lines of their own). The values come from the stores committed next to this
file (`*.tar.xz`, unpacked into a temporary folder) and, for runs whose stores are lost, from what `triadapt compare`
wrote of them (`earlier/`). A marker whose key no generator gives, or a generator whose words no longer fit the data
(`claim`), stops the script with one line.

    python benchmarks/quality/make_results.py            # rewrite the marked values of the pages (and draw the
                                                         # figures: a table beside each holds what --check checks)
    python benchmarks/quality/make_results.py --check    # exit 1 when a page differs from what the stores give
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parents[1]
PAGES = [ROOT / "docs" / "results.md", ROOT / "README.md"]
MARKER = re.compile(r"<!-- results:(?P<key>[\w.-]+) -->(?P<value>.*?)<!-- /results -->", re.DOTALL)


FIGURE_2_PNG = ROOT / "docs" / "img" / "rotten-tomatoes-rank-heatmaps.png"


def generated(draw: bool = False) -> dict[str, str]:
    """Every key's value, from every store there is; with ``draw``, the page's figures are drawn again too."""
    import results_demo
    import results_drug_reviews
    import results_first_runs
    import results_rotten_tomatoes
    import results_smollm2
    from results_store import opened

    values: dict[str, str] = {}
    with opened("drug-reviews-long") as uri:
        values.update(results_drug_reviews.values(uri))
    with opened("rotten-tomatoes") as uri:
        rotten_tomatoes, panels = results_rotten_tomatoes.values(uri)
        values.update(rotten_tomatoes)
    if draw:
        results_rotten_tomatoes.draw_figure_2(panels, FIGURE_2_PNG)
    if (HERE / f"{results_smollm2.GRID}.tar.xz").exists():
        with opened(results_smollm2.GRID) as uri:
            values.update(results_smollm2.values(uri))
    else:  # not started: run.sh packs the archive when the grid ends (store_archive.py pack, part way)
        values.update(results_smollm2.values(None))
    with opened("demo") as uri:
        values.update(results_demo.values(uri))
    values.update(results_first_runs.values())
    return values


def render(page: Path, text: str, values: dict[str, str]) -> str:
    missing = sorted({m["key"] for m in MARKER.finditer(text)} - set(values))
    if missing:
        raise SystemExit(f"make_results: {page.relative_to(ROOT)} has markers no generator gives: {', '.join(missing)}")

    def fill(match: re.Match) -> str:
        value = values[match["key"]]
        block = match["value"].startswith("\n")  # a table: blank lines around it, as Markdown needs
        body = f"\n\n{value}\n\n" if block else value
        return f"<!-- results:{match['key']} -->{body}<!-- /results -->"

    return MARKER.sub(fill, text)


def not_shown(values: dict[str, str], texts: list[str]) -> list[str]:
    """The generated keys no page has a marker for: the words around them are still to be written (e.g. a grid that
    was running when the page was written has finished), so the pages would silently go stale."""
    shown = {m["key"] for text in texts for m in MARKER.finditer(text)}
    return sorted(set(values) - shown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a page differs from what the stores give")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    values = generated(draw=not args.check)
    unshown = not_shown(values, [page.read_text() for page in PAGES])
    if unshown:
        raise SystemExit(f"make_results: values no page shows: {', '.join(unshown)} (a grid finished whose section "
                         f"is not written yet, or a marker removed: write or remove it)")
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = render(page, text, values)
        name = str(page.relative_to(ROOT))
        if new == text:
            print(f"{name}: {len(MARKER.findall(text))} marked values match the stores")
        elif args.check:
            print("\n".join(difflib.unified_diff(text.splitlines(), new.splitlines(), name, "from the stores",
                                                lineterm="", n=0)))
            stale.append(name)
        else:
            page.write_text(new)
            print(f"{name}: wrote {len(MARKER.findall(new))} marked values")
    if stale:
        print(f"make_results: {', '.join(stale)} differ from the stores: run benchmarks/quality/make_results.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
