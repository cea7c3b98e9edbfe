"""docs/results.md on Rotten Tomatoes: the Tables grid run again with the finer learning-rate grid (store
`rotten-tomatoes`), its Figure 2 (final ranks), its Figures 3-4 (the t0 / ΔT grid), and the first run (store lost:
`earlier/`) beside it. `claim` stops the script when the data no longer says what the page's words say."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import results_earlier as earlier
from results_drug_reviews import ABLATIONS, TABLE_I, TRIADAPT, claim, dates, finished, lr, span
from results_store import GridRuns, ci_text, lr_text, machine, markdown, p_text, pct, progress, signed
from results_tables import ablation_table, head_to_head, methods_table, sensitivity_table
from triadapt_runner.grid.selection import edge

TABLES = "offline-tables"
FIGURES = "offline-sensitivity-rotten-tomatoes"
LOW_RANK = TABLE_I[:-1]
FIGURE_2 = ["TriAdaptLoRA linear", "peft AdaLoRA", "IncreLoRA-style"]  # the rows whose ranks are allocated
VARIANTS = {"t0=ΔT=4": "t0 = ΔT = 4 (default)", "t0=19": "t0 = 19", "t0=38": "t0 = 38", "ΔT=2": "ΔT = 2",
            "ΔT=12": "ΔT = 12"}
FIGURE_ROWS = ["TriAdaptLoRA linear", "IncreLoRA-style"]
SHORT = {"TriAdaptLoRA linear": "linear", "IncreLoRA-style": "increlora"}  # in marker keys
MATRIX_KINDS = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
         "attention.output.dense": "attn. output", "intermediate.dense": "FFN in", "output.dense": "FFN out"}


def table_1(grid: GridRuns, first: dict[str, earlier.Row], out: dict[str, str]) -> None:
    runs = finished(grid)
    claim(all(machine(r) == "C" for r in runs), "every Rotten Tomatoes cell ran on the CPU")
    devices = {r.data.tags.get("triadapt.device") for r in runs}
    claim(len(devices) == 1, "every Rotten Tomatoes cell ran on one device")
    out["rt.device"] = devices.pop()
    out["rt.cells"], out["rt.dates"] = str(len(runs)), dates(runs)
    out["rt.lr-grid"] = " / ".join(lr_text(v) for v in grid.select_values())
    out["rt.table-1"] = methods_table(grid, TABLE_I, "peft LoRA")

    others = [m for m in grid.methods() if m != "peft LoRA"]
    significant = [m for m in others if (grid.diff(m, "peft LoRA").p_value or 1) < 0.05]
    no_norm = grid.diff("TriAdaptLoRA linear no norm", "peft LoRA")
    claim(significant == ["TriAdaptLoRA linear no norm"] and no_norm.diff < 0,
          "the one row that differs from peft LoRA at p < 0.05 is TriAdaptLoRA linear no norm, below it")
    out["rt.no-norm-vs-lora"] = f"{signed(no_norm.diff)}, p = {p_text(no_norm.p_value)}"
    out["rt.min-p-vs-lora"] = p_text(min(grid.diff(m, "peft LoRA").p_value for m in TABLE_I[1:]))
    out["rt.comparisons"] = str(len(others))
    means = {m: grid.mean(m) for m in LOW_RANK}
    out["rt.low-rank-range"] = f"{pct(min(means.values()), 2)} to {pct(max(means.values()), 2)}"
    claim(max(means, key=means.get) == "peft AdaLoRA", "peft AdaLoRA has the best mean of the low-rank rows")
    claim(min(means, key=means.get) == "IncreLoRA-style", "the IncreLoRA-style row has the lowest mean")
    out["rt.linear-vs-increlora"] = ci_text(grid.diff("TriAdaptLoRA linear", "IncreLoRA-style"))
    adalora = grid.diff("peft AdaLoRA", "TriAdaptLoRA linear")
    claim(adalora.p_value >= 0.05, "peft AdaLoRA and TriAdaptLoRA linear cannot be told apart")
    out["rt.adalora-vs-linear"] = ci_text(adalora)
    linear = grid.diff("TriAdaptLoRA linear", "peft LoRA")
    out["rt.linear-vs-lora"] = f"{signed(linear.diff)}, p = {p_text(linear.p_value)}"
    below = [m for m in TRIADAPT if means[m] < means["peft LoRA"]]
    claim(below == ["TriAdaptLoRA nonlinear", "TriAdaptLoRA fixed-k"] and means["TriAdaptLoRA linear"] > means[
        "peft LoRA"], "TriAdaptLoRA nonlinear and fixed-k are below peft LoRA, linear above it")
    out["rt.below-lora"] = ", ".join(f"{m.replace('TriAdaptLoRA ', '')} {signed(grid.diff(m, 'peft LoRA').diff)}"
                                     for m in below)

    # against the first run (3 rates): how far each row moved with the finer grid
    moved = {m: grid.mean(m) - first[m].mean for m in TABLE_I}
    out["rt.lora-moved"] = f"{pct(first['peft LoRA'].mean, 2)} to {pct(means['peft LoRA'], 2)}"
    out["rt.linear-moved"] = (f"{pct(first['TriAdaptLoRA linear'].mean, 2)} to "
                              f"{pct(means['TriAdaptLoRA linear'], 2)}")
    first_lead = first["TriAdaptLoRA linear"].diffs["peft LoRA"][0]
    out["rt.lead-then-now"] = f"{pct(first_lead, 2)} to {pct(linear.diff, 2)}"
    claim(max(moved, key=moved.get) == "peft LoRA", "peft LoRA moved up the most with the finer grid")
    choices = {m: grid.selection()[m]["chosen"] for m in TABLE_I}
    lora_scores = grid.selection()["peft LoRA"]["scores"]
    claim(choices["peft LoRA"] == 1e-3 and all(lora_scores[repr(1e-3)] > lora_scores[repr(v)] for v in (5e-4, 2.5e-3)),
          "peft LoRA chose 1e-3, a rate the first grid did not have, over both of that grid's rates around it")
    triadapt_rows = [m for m in grid.methods() if m.startswith("TriAdaptLoRA")]
    out["rt.triadapt-vs-lora"] = span([grid.diff(m, "peft LoRA").diff for m in triadapt_rows], signed)
    out["rt.linear-rate"] = lr_text(choices["TriAdaptLoRA linear"])
    out["rt.increlora-rate"] = lr_text(choices["IncreLoRA-style"])
    out["rt.fullft-rate"] = lr_text(choices["full fine-tuning"])

    values = grid.select_values()
    top = max(values)
    at_top = [m for m in grid.methods() if edge(values, grid.selection()[m]["chosen"]) == "top"]
    claim(set(TRIADAPT + ["peft AdaLoRA"]) <= set(at_top) and "peft LoRA" not in at_top,
          "every TriAdaptLoRA threshold and peft AdaLoRA chose the top of the grid, peft LoRA did not")
    out["rt.at-top"] = str(len(at_top))
    out["rt.top"] = lr_text(top)
    gains = [grid.selection()[m]["scores"][repr(top)] - grid.selection()[m]["scores"][repr(sorted(values)[-2])]
             for m in at_top]
    out["rt.top-gain"] = span(gains, lambda v: f"{v * 100:.1f}")
    claim(edge(values, choices["full fine-tuning"]) == "bottom", "full fine-tuning chose the bottom of the grid")

    full = grid.diff("full fine-tuning", "TriAdaptLoRA linear")
    claim(max(TABLE_I, key=grid.mean) == "full fine-tuning", "full fine-tuning has the best mean")
    out["rt.fullft-vs-linear"] = f"{signed(full.diff)}, p = {p_text(full.p_value)}"
    out["rt.fullft-vs-adalora"] = ci_text(grid.diff("full fine-tuning", "peft AdaLoRA"))


def tables_2_3(grid: GridRuns, out: dict[str, str]) -> None:
    out["rt.tables-2-3"] = ablation_table(grid, ABLATIONS, "TriAdaptLoRA linear", "peft LoRA")
    ablations = list(ABLATIONS)[1:]
    diffs = {m: grid.diff(m, "TriAdaptLoRA linear") for m in ablations}
    claim(min(d.p_value for d in diffs.values()) >= 0.05, "no ablation differs from TriAdaptLoRA linear at p < 0.05")
    out["rt.ablation-min-p"] = p_text(min(d.p_value for d in diffs.values()))
    out["rt.ablation-range"] = span([d.diff for d in diffs.values()], lambda v: signed(v))
    hits = {m: list(grid.values(m, "capacity_hits").values()) for m in ABLATIONS}
    claim(min(hits["TriAdaptLoRA linear no norm"]) > 0, "without normalisation some matrix reaches the ceiling in "
                                                        "every run")
    claim(all(v == 0 for m in ("TriAdaptLoRA linear", "TriAdaptLoRA linear norm sqrt(r)") for v in hits[m]),
          "with r or sqrt(r) no matrix reaches the ceiling")
    out["rt.nonorm-hits"] = span(hits["TriAdaptLoRA linear no norm"], lambda v: f"{v:.0f}")
    off = diffs["TriAdaptLoRA linear non-orthogonal"]
    claim(off.diff > 0, "the regulariser off is ahead of on")
    claim(grid.mean("TriAdaptLoRA linear non-orthogonal") > grid.mean("peft AdaLoRA"),
          "the regulariser-off ablation's mean is above peft AdaLoRA's")
    out["rt.orth-off"] = f"{signed(off.diff)}, p = {p_text(off.p_value)}"
    order = sorted(ABLATIONS, key=grid.mean, reverse=True)
    claim(order == ["TriAdaptLoRA linear non-orthogonal", "TriAdaptLoRA linear", "TriAdaptLoRA linear norm sqrt(r)",
                    "TriAdaptLoRA linear no norm"], "the order is: regulariser off, linear, sqrt(r), no norm")


def final_ranks(grid: GridRuns, run: Any) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = grid.tracker.client.download_artifacts(run.info.run_id, "final_ranks.json", tmp)
        return json.loads(Path(path).read_text())


def by_kind(ranks: dict[str, int]) -> dict[str, float]:
    """The mean final rank of each module kind over the layers (kinds as the figure's columns)."""
    from triadapt_runner.tracking.plots import rank_grid

    _, kinds, grid = rank_grid(ranks)
    means = {kind: statistics.fmean(row[i] for row in grid) for i, kind in enumerate(kinds)}
    return {label: means[kind] for kind, label in MATRIX_KINDS.items()}


def seed_0_runs(grid: GridRuns, method: str) -> dict[float, Any]:
    """Seed 0 of ``method`` at every rate of the grid (its selection runs), by rate."""
    return {lr(r): r for r in finished(grid, method) if r.data.tags["triadapt.seed"] == "0"}


def figure_2(grid: GridRuns, out: dict[str, str]) -> dict[str, dict[str, int]]:
    """Seed 0's final ranks of the allocating Table I rows: at the chosen rate, the mean per module kind (a table
    beside the figure, which `draw_figure_2` draws); at every rate, how the rows split the budget between the
    query / key matrices and the rest."""
    panels = {m: final_ranks(grid, grid.run(m, 0)) for m in FIGURE_2}
    kinds = {m: by_kind(r) for m, r in panels.items()}
    head = ["seed 0 at its chosen rate"] + list(MATRIX_KINDS.values()) + ["min–max", "sum"]
    rows = [[m] + [f"{v:.1f}" for v in kinds[m].values()]
            + [f"{min(panels[m].values())}–{max(panels[m].values())}", str(sum(panels[m].values()))] for m in FIGURE_2]
    out["rt.figure-2"] = markdown(head, rows)
    claim(sorted(kinds[FIGURE_2[0]], key=kinds[FIGURE_2[0]].get)[-2:] in (["query", "key"], ["key", "query"]),
          "TriAdaptLoRA linear gives query and key the most at its chosen rate")

    rates = sorted(grid.select_values())
    cells: dict[str, dict[float, dict[str, float]]] = {
        m: {rate: by_kind(final_ranks(grid, run)) for rate, run in sorted(seed_0_runs(grid, m).items())}
        for m in FIGURE_2}
    claim(all(set(cells[m]) == set(rates) for m in FIGURE_2), "every allocating row has a seed-0 run at every rate")
    attention = ("query", "key")

    def split(means: dict[str, float]) -> str:
        qk = statistics.fmean(means[k] for k in attention)
        rest = statistics.fmean(v for k, v in means.items() if k not in attention)
        return f"{qk:.1f} / {rest:.1f}"

    spread = {m: {rate: max(v.values()) - min(v.values()) for rate, v in cells[m].items()} for m in FIGURE_2}
    out["rt.figure-2-rates"] = markdown(
        ["seed 0: query & key / the other four kinds (spread of the six kinds' means)"] + [lr_text(r) for r in rates],
        [[m] + [f"{split(cells[m][r])} ({spread[m][r]:.1f})" for r in rates] for m in FIGURE_2])
    claim(all(sorted(cells[m][r], key=cells[m][r].get)[:2] in (["query", "key"], ["key", "query"])
              for m in FIGURE_2[1:] for r in rates), "the sensitivity-driven peers give query and key the least at "
                                                     "every rate")
    pairs = [grid.diff(a, b).p_value for i, a in enumerate(FIGURE_2) for b in FIGURE_2[i + 1:]]
    claim(min(pairs) >= 0.05, "no two of the allocating rows differ at p < 0.05")
    out["rt.fig2-min-p"] = p_text(min(pairs))
    lean = {r: statistics.fmean(cells[FIGURE_2[0]][r][k] for k in attention)
            - statistics.fmean(v for k, v in cells[FIGURE_2[0]][r].items() if k not in attention) for r in rates}
    claim(min(lean.values()) < 0 < max(lean.values()), "which kinds TriAdaptLoRA linear favours changes with the rate")
    claim(all(spread[FIGURE_2[0]][r] < min(spread[m][r] for m in FIGURE_2[1:]) for r in rates),
          "TriAdaptLoRA linear's kinds are closer together than either peer's at every rate")
    out["rt.fig2-linear-spread"] = span(list(spread[FIGURE_2[0]].values()), lambda v: f"{v:.1f}")
    out["rt.fig2-peer-spread"] = span([v for m in FIGURE_2[1:] for v in spread[m].values()], lambda v: f"{v:.1f}")
    return panels


def draw_figure_2(panels: dict[str, dict[str, int]], path: Path) -> None:
    from triadapt_runner.tracking.plots import rank_heatmaps

    rank_heatmaps({f"{m} (seed 0)": r for m, r in panels.items()}, path,
                  title="final ranks per matrix, Rotten Tomatoes")


def figures(grid: GridRuns, tables: GridRuns, out: dict[str, str]) -> None:
    """Figures 3-4 from the complete Figures grid: each variant at its own chosen rate, against its method's default
    and head to head."""
    out["rt.figures"] = sensitivity_table(grid, VARIANTS, FIGURE_ROWS)
    runs = finished(grid)
    claim({r.data.tags.get("triadapt.device") for r in runs} == {out["rt.device"]},
          "the Figures grid ran on the Tables grid's device and torch build")
    claim(grid.select_values() == tables.select_values(), "the Figures grid chose from the Tables grid's rates")
    out["rt.figure-dates"] = dates(runs)
    default, moved = next(iter(VARIANTS)), list(VARIANTS)[1:]
    values = grid.select_values()
    chosen = {f"{m} {v}": grid.selection()[f"{m} {v}"]["chosen"] for m in FIGURE_ROWS for v in VARIANTS}
    claim(all(edge(values, chosen[f"TriAdaptLoRA linear {v}"]) == "top" for v in VARIANTS),
          "TriAdaptLoRA linear chose the top of the grid at every variant")
    claim(not any(edge(values, chosen[f"IncreLoRA-style {v}"]) for v in VARIANTS),
          "the IncreLoRA-style row chose inside the grid at every variant")
    for method in FIGURE_ROWS:
        claim(grid.values(f"{method} {default}") == tables.values(method),
              f"the default {method} cells reproduce the Tables grid's seed by seed")
        means = [grid.mean(f"{method} {v}") for v in VARIANTS]
        claim(max(means) - min(means) < 0.02, f"{method}'s variants lie within 2 points of each other (flat)")
        out[f"rt.fig-range-{SHORT[method]}"] = span(means, lambda v: f"{v * 100:.2f}")
        out[f"rt.fig-rates-{SHORT[method]}"] = ", ".join(
            f"{VARIANTS[v].replace(' (default)', '')} {lr_text(chosen[f'{method} {v}'])}"
            for v in VARIANTS)
    against_default = {f"{m} {v}": grid.diff(f"{m} {v}", f"{m} {default}") for m in FIGURE_ROWS for v in moved}
    significant = [f"{m} ({signed(d.diff)}, p = {p_text(d.p_value)})" for m, d in against_default.items()
                   if (d.p_value or 1) < 0.05]
    out["rt.fig-vs-default"] = "; ".join(significant) or "none"
    claim(all(chosen[m] != chosen[m.rsplit(" ", 1)[0] + f" {default}"] for m, d in against_default.items()
              if (d.p_value or 1) < 0.05), "every variant that differs from its default chose another rate than it")
    claim(len(significant) == 1 and significant[0].startswith("IncreLoRA-style ΔT="),
          "one variant differs from its default at p < 0.05, an IncreLoRA-style ΔT one")
    claim(all(d.p_value >= 0.05 or d.p_value < 0.05 / len(against_default) for d in against_default.values()
              if d.p_value is not None), "a variant that differs at p < 0.05 also survives a Bonferroni correction")
    out["rt.fig-comparisons"] = str(len(against_default))
    head = head_to_head(grid, VARIANTS, *FIGURE_ROWS)
    out["rt.fig-head-to-head"] = "; ".join(text for _, _, text in head)
    out["rt.fig-ahead"] = f"{sum(d.diff > 0 for _, d, _ in head)} of {len(head)}"
    claim(all((d.p_value or 1) >= 0.05 for _, d, _ in head), "no head-to-head difference is significant")
    out["rt.fig-h2h-range"] = span([d.diff for _, d, _ in head], signed)
    first = earlier.rows("offline-sensitivity-rotten-tomatoes", "rotten_tomatoes")
    first_lead = [first[f"TriAdaptLoRA linear {v}"].mean - first[f"IncreLoRA-style {v}"].mean for v in VARIANTS]
    claim(max(d.diff for _, d, _ in head) < min(first_lead), "at every variant TriAdaptLoRA linear's lead is below "
                                                              "the first run's smallest")
    behind = [VARIANTS[v] for v, d, _ in head if d.diff < 0]
    claim(behind == ["t0 = 19"], "TriAdaptLoRA linear's mean is behind the IncreLoRA-style row's at t0 = 19 only")


def figures_progress(uri: str, out: dict[str, str]) -> bool:
    """How far the Figures grid has run (it runs after the Tables grid); whether it is complete."""
    done, planned = progress(uri, FIGURES)
    out["rt.figure-progress"] = f"{done} of its {planned} cells"
    return done == planned


def values(uri: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The page's values, and Figure 2's panels."""
    out: dict[str, str] = {}
    grid = GridRuns(uri, TABLES)
    first = earlier.rows(TABLES, "rotten_tomatoes")
    table_1(grid, first, out)
    tables_2_3(grid, out)
    panels = figure_2(grid, out)
    if figures_progress(uri, out):
        figures(GridRuns(uri, FIGURES), grid, out)
    return out, panels

