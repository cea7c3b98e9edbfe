"""docs/results.md on causal-LM SFT: the SmolLM2 grid run again with the wider learning-rate grid (store
`smollm2-sft`): how far it has run, and once it is complete its table (validation perplexity of the answer tokens,
lower is better) and differences against peft LoRA."""

from __future__ import annotations

import statistics

from results_drug_reviews import dates, finished
from results_store import MINUS, GridRuns, lr_text, machine, markdown, p_text, progress
from triadapt_runner.grid.selection import edge
from triadapt_runner.tracking.significance import Difference

GRID = "smollm2-sft"
ROWS = ["peft LoRA", "TriAdaptLoRA linear", "TriAdaptLoRA nonlinear"]
BASELINE = ROWS[0]


def ppl(value: float, sign: bool = False) -> str:
    """A perplexity (or a difference of two) to four decimals: 1.2124, +0.0181."""
    return f"{value:{'+' if sign else ''}.4f}".replace("-", MINUS)


def versus(d: Difference) -> str:
    return f"{ppl(d.diff, True)} [{ppl(d.ci_low, True)}, {ppl(d.ci_high, True)}], {p_text(d.p_value)}"


def selection_cell(grid: GridRuns, method: str) -> str:
    """Seed 0's perplexity at each rate (``selection.json`` keeps scores to maximise: a perplexity negated) and the
    rate chosen."""
    entry = grid.selection()[method]
    scores = [entry["scores"][repr(v)] for v in grid.select_values()]
    return " / ".join(ppl(-score) for score in scores) + f" → {lr_text(entry['chosen'])}"


def table(grid: GridRuns) -> str:
    head = ["method", "perplexity at seed 0: " + " / ".join(lr_text(v) for v in grid.select_values()) + " → chosen",
            "perplexity (n = 3)", "per seed", f"Δ vs {BASELINE} [95 % CI], p", "rank use"]
    rows = []
    for method in ROWS:
        values = list(grid.values(method).values())
        rank_use = grid.mean(method, "rank_use")
        rows.append([method, selection_cell(grid, method),
                     f"{ppl(statistics.fmean(values))} ± {ppl(statistics.stdev(values))}",
                     ", ".join(ppl(v) for v in values),
                     "baseline" if method == BASELINE else versus(grid.diff(method, BASELINE)),
                     "—" if rank_use is None else f"{rank_use:.2f}"])
    return markdown(head, rows)


def values(uri: str | None) -> dict[str, str]:
    """The page's values (``uri``: the grid's store, None before it exists): its progress, and once it is complete,
    its table and comparisons."""
    done, planned = progress(uri, GRID)
    out = {"sft.progress": f"{done} of its {planned} cells"}
    if done < planned:
        return out
    grid = GridRuns(uri, GRID, metric="result_perplexity")
    runs = finished(grid)
    out["sft.machines"] = ", ".join(sorted({machine(r) for r in runs}))
    out["sft.dates"] = dates(runs)
    out["sft.table"] = table(grid)
    for method in ROWS[1:]:
        d = grid.diff(method, BASELINE)
        out[f"sft.{method.split()[-1]}-vs-lora"] = f"{ppl(d.diff, True)}, p = {p_text(d.p_value)}"
    rates = grid.select_values()
    out["sft.at-edge"] = "; ".join(f"{m} {edge(rates, grid.selection()[m]['chosen'])}" for m in ROWS
                                   if edge(rates, grid.selection()[m]["chosen"])) or "none"
    return out
