"""docs/results.md on the drug reviews: the 10-epoch Tables and Figures grids (store `drug-reviews-long`) and the
5-epoch run before them (its store lost: `earlier/`). Every value is a string keyed by its marker in the doc;
`claim` stops the script when the data no longer says what the doc's words around a value say."""

from __future__ import annotations

import datetime
import statistics
from typing import Any

import results_earlier as earlier
from results_store import GridRuns, ci_text, lr_text, machine, pct, p_text, signed
from results_tables import ablation_table, head_to_head, methods_table, sensitivity_table
from triadapt_runner.grid.selection import edge

TABLE_I = ["peft LoRA", "TriAdaptLoRA linear", "TriAdaptLoRA nonlinear", "TriAdaptLoRA fixed-k", "peft AdaLoRA",
           "IncreLoRA-style", "full fine-tuning"]
TRIADAPT = ["TriAdaptLoRA linear", "TriAdaptLoRA nonlinear", "TriAdaptLoRA fixed-k"]
ABLATIONS = {"TriAdaptLoRA linear": "TriAdaptLoRA linear (orthogonal, λ = 0.1, norm by r)",
             "TriAdaptLoRA linear non-orthogonal": "non-orthogonal (λ = 0)", "TriAdaptLoRA linear no norm": "no norm",
             "TriAdaptLoRA linear norm sqrt(r)": "norm by sqrt(r)"}
VARIANTS = {"t0=ΔT=8": "t0 = ΔT = 8 (default)", "t0=38": "t0 = 38", "t0=76": "t0 = 76", "ΔT=4": "ΔT = 4",
            "ΔT=24": "ΔT = 24"}
FIGURE_ROWS = ["TriAdaptLoRA linear", "IncreLoRA-style"]
CLASSES = 3  # negative, neutral, positive


def claim(holds: bool, what: str) -> None:
    if not holds:
        raise SystemExit(f"make_results: the data no longer says that {what}: rewrite that sentence of docs/results.md")


def on_majority_class(run: Any) -> bool:
    """A run that predicts one class for every review: its macro F1 is that of the constant prediction,
    2a / (1 + a) / classes for accuracy a."""
    a, f1 = run.data.metrics["result_accuracy"], run.data.metrics["result_macro_f1"]
    return abs(f1 - 2 * a / (1 + a) / CLASSES) < 1e-9


def span(values: list[float], fmt) -> str:
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)} to {fmt(high)}"


def dates(runs: list[Any]) -> str:
    days = sorted({datetime.datetime.fromtimestamp(r.info.start_time / 1000, datetime.timezone.utc).date()
                   for r in runs})
    return str(days[0]) if len(days) == 1 else f"{days[0]} to {days[-1]}"


def finished(grid: GridRuns, method: str | None = None) -> list[Any]:
    """Every finished run of the grid (selection runs too), of ``method`` when given."""
    return [r for r in grid.children if r.info.status == "FINISHED"
            and (method is None or r.data.tags["triadapt.method"] == method)]


def lr(run: Any) -> float:
    return float(run.data.params["train.learning_rate"])


def tables(grid: GridRuns, out: dict[str, str]) -> None:
    runs = finished(grid)
    out["dr.cells"] = str(len(runs))
    by_machine = {m: [r for r in runs if machine(r) == m] for m in "GC"}
    out["dr.cpu-cells"] = str(len(by_machine["C"]))
    out["dr.gpu-dates"], out["dr.cpu-dates"] = dates(by_machine["G"]), dates(by_machine["C"])
    out["dr.table-1"] = methods_table(grid, TABLE_I, "peft LoRA")
    out["dr.tables-2-3"] = ablation_table(grid, ABLATIONS, "TriAdaptLoRA linear", "peft LoRA")

    lora = grid.values("peft LoRA")
    pairs = []
    for method in TRIADAPT + ["full fine-tuning"]:
        gaps = [grid.values(method)[s] - lora[s] for s in (0, 1)]
        claim(all(machine(grid.run(m, s)) == "G" for m in (method, "peft LoRA") for s in (0, 1)),
              f"seeds 0 and 1 of {method} and peft LoRA ran on the GPU")
        claim(min(gaps) > 0, f"{method} is above peft LoRA on seeds 0 and 1")
        pairs.append(f"{method.replace('TriAdaptLoRA ', '')} {pct(gaps[0], 2)} and {pct(gaps[1], 2)}")
    out["dr.gpu-pairs"] = ", ".join(pairs)

    others = [m for m in grid.methods() if m != "peft LoRA"]
    significant = [m for m in others if (grid.diff(m, "peft LoRA").p_value or 1) < 0.05]
    claim([m for m in significant if m in TABLE_I] == ["TriAdaptLoRA linear"],
          "TriAdaptLoRA linear is the one Table I row with p < 0.05 against peft LoRA")
    linear = grid.diff("TriAdaptLoRA linear", "peft LoRA")
    out["dr.linear-vs-lora"] = f"{signed(linear.diff)}, p = {p_text(linear.p_value)}"
    out["dr.comparisons"] = str(len(others))

    adalora = grid.values("peft AdaLoRA")
    claim(all(machine(grid.run("peft AdaLoRA", s)) == "C" for s in adalora), "peft AdaLoRA's seeds ran on the CPU")
    means = {m: f"{grid.mean(m) * 100:.2f}" for m in ("peft AdaLoRA", "TriAdaptLoRA nonlinear", "TriAdaptLoRA fixed-k")}
    claim(len(set(means.values())) == 1, "peft AdaLoRA, TriAdaptLoRA nonlinear and fixed-k have the same mean")
    out["dr.adalora-mean"] = means["peft AdaLoRA"]

    inc = {s: grid.run("IncreLoRA-style", s) for s in grid.seeds("IncreLoRA-style")}
    collapsed = [s for s, r in inc.items() if on_majority_class(r)]
    out["dr.majority"] = pct(inc[collapsed[0]].data.metrics["result_accuracy"])
    out["dr.increlora-collapsed"] = f"{len(collapsed)} of {len(inc)}"
    hits = lambda rs: span([r.data.metrics["capacity_hits"] for r in rs], lambda v: f"{v:.0f}")  # noqa: E731
    out["dr.increlora-collapsed-hits"] = hits([inc[s] for s in collapsed])
    out["dr.increlora-off-hits"] = hits([r for s, r in inc.items() if s not in collapsed])
    triadapt_runs = [grid.run(m, s) for m in TRIADAPT for s in grid.seeds(m)]
    claim(not any(on_majority_class(r) for r in triadapt_runs), "every TriAdaptLoRA run leaves the majority class")
    out["dr.triadapt-max-hits"] = f"{max(r.data.metrics['capacity_hits'] for r in triadapt_runs):.0f}"
    low_rank = TABLE_I[:-1]
    gaps = [abs(grid.mean(a) - grid.mean(m)) for a in low_rank for m in low_rank]
    claim(max(gaps) == abs(grid.mean("TriAdaptLoRA linear") - grid.mean("IncreLoRA-style")),
          "TriAdaptLoRA linear against IncreLoRA-style is the largest gap between two low-rank rows")
    out["dr.linear-vs-increlora"] = ci_text(grid.diff("TriAdaptLoRA linear", "IncreLoRA-style"))

    values = grid.select_values()
    at_top = [m for m in grid.methods() if edge(values, grid.selection()[m]["chosen"]) == "top"]
    claim("TriAdaptLoRA linear" in at_top and "IncreLoRA-style" in at_top
          and edge(values, grid.selection()["peft LoRA"]["chosen"]) is None,
          "TriAdaptLoRA linear and IncreLoRA-style chose the top of the drug-review grid, peft LoRA a rate inside it")
    out["dr.at-top"] = f"{len(at_top)} rows ({', '.join(at_top)})"
    out["dr.may-be-higher"] = ", ".join(m for m in at_top if m != "IncreLoRA-style")
    out["dr.top"] = lr_text(max(values))
    full = grid.diff("full fine-tuning", "TriAdaptLoRA linear")
    claim(max(TABLE_I, key=grid.mean) == "full fine-tuning", "full fine-tuning is the best mean of Table I")
    out["dr.fullft-mean"] = f"{grid.mean('full fine-tuning') * 100:.2f}"
    out["dr.fullft-vs-linear"] = f"{signed(full.diff)}, p = {p_text(full.p_value)}"
    params = lambda m: grid.run(m, 0).data.metrics["trained_parameters"]  # noqa: E731
    out["dr.fullft-params"] = f"{params('full fine-tuning') / params('TriAdaptLoRA linear'):.0f}"
    claim(grid.selection()["full fine-tuning"]["chosen"] == min(map(float, grid.selection()["full fine-tuning"]
                                                                    ["scores"])), "full fine-tuning chose 1e-4")

    def step(method: str, where: str) -> float | None:
        times = [r.data.metrics["median_step_s"] for r in finished(grid, method) if machine(r) == where]
        return statistics.median(times) if times else None

    for where, key in (("G", "gpu"), ("C", "cpu")):
        rest = [s for m in grid.methods() if m != "peft AdaLoRA" and (s := step(m, where)) is not None]
        out[f"dr.adalora-step-{key}"] = f"{step('peft AdaLoRA', where):.2f}"
        out[f"dr.other-step-{key}"] = span(rest, lambda v: f"{v:.2f}").replace(" to ", "–")

    linear_mean = grid.mean("TriAdaptLoRA linear")
    claim(all(grid.mean(m) <= linear_mean + 5e-5 for m in [*ABLATIONS, *TRIADAPT]),
          "no ablation and no other threshold has a higher mean than TriAdaptLoRA linear")
    claim(linear_mean > grid.mean("TriAdaptLoRA linear non-orthogonal"), "the regulariser on is ahead of off")
    out["dr.orth-gain"] = f"{(linear_mean - grid.mean('TriAdaptLoRA linear non-orthogonal')) * 100:.2f}"
    out["dr.norm-vs-none"] = f"{(linear_mean - grid.mean('TriAdaptLoRA linear no norm')) * 100:.2f}"
    claim(abs(linear_mean - grid.mean("TriAdaptLoRA linear norm sqrt(r)")) < 5e-5, "norm by r is level with sqrt(r)")
    out["dr.ablation-min-p"] = p_text(min(grid.diff(m, "TriAdaptLoRA linear").p_value for m in list(ABLATIONS)[1:]))
    no_norm = grid.values("TriAdaptLoRA linear no norm", "capacity_hits").values()
    claim(min(no_norm) > 0, "without normalisation some matrix reaches the ceiling in every run")
    out["dr.nonorm-hits"] = span(list(no_norm), lambda v: f"{v:.0f}")
    claim(all(v == 0 for m in ("TriAdaptLoRA linear", "TriAdaptLoRA linear norm sqrt(r)")
              for v in grid.values(m, "capacity_hits").values()), "with r or sqrt(r) no matrix reaches the ceiling")


def figures(grid: GridRuns, tables_grid: GridRuns, out: dict[str, str]) -> None:
    out["dr.figures"] = sensitivity_table(grid, VARIANTS, FIGURE_ROWS)
    out["dr.figure-cells"] = str(len(finished(grid)))
    default, moved = next(iter(VARIANTS)), list(VARIANTS)[1:]
    linear = [f"TriAdaptLoRA linear {v}" for v in VARIANTS]
    out["dr.fig-linear-range"] = span([grid.mean(m) for m in linear], lambda v: f"{v * 100:.2f}")
    against_default = {f"{m} {v}": grid.diff(f"{m} {v}", f"{m} {default}") for m in FIGURE_ROWS for v in moved}
    significant = [m for m, d in against_default.items() if (d.p_value or 1) < 0.05]
    claim(significant == ["TriAdaptLoRA linear t0=76"], "t0 = 76 is the one variant with p < 0.05 against its default")
    out["dr.fig-linear-t076"] = signed(against_default["TriAdaptLoRA linear t0=76"].diff)
    out["dr.fig-comparisons"] = str(len(against_default))

    head = head_to_head(grid, VARIANTS, *FIGURE_ROWS)
    out["dr.fig-head-to-head"] = "; ".join(text for _, _, text in head)
    behind = [v for v, d, _ in head if v != default and d.diff < 0]
    claim(len(behind) == 3 and head[0][1].diff > 0, "TriAdaptLoRA is behind at 3 of 4 moved variants, ahead at the "
                                                    "default")
    claim([v for v, d, _ in head if (d.p_value or 1) < 0.05] == ["t0=38"] and head[1][1].diff < 0,
          "the one significant head-to-head difference is a loss at t0 = 38")
    out["dr.fig-moved-means"] = (f"{statistics.fmean(grid.mean(f'TriAdaptLoRA linear {v}') for v in moved) * 100:.2f}"
                                 f" against {statistics.fmean(grid.mean(f'IncreLoRA-style {v}') for v in moved) * 100:.2f}")

    inc_default = f"IncreLoRA-style {default}"
    scores = grid.selection()[inc_default]["scores"]
    chosen = grid.selection()[inc_default]["chosen"]
    claim(chosen == 2.5e-3 and max(scores, key=scores.get) == repr(chosen), "the IncreLoRA-style default chose 2.5e-3")
    runner_up = sorted(scores.values())[-2]
    out["dr.inc-default-choice"] = f"{pct(scores[repr(chosen)])} against {pct(runner_up)}"
    inc_runs = [r for v in VARIANTS for r in finished(grid, f"IncreLoRA-style {v}")]
    at_top = [r for r in inc_runs if lr(r) == 2.5e-3]
    out["dr.inc-collapse-top"] = f"{sum(map(on_majority_class, at_top))} of its {len(at_top)}"
    middle = [r for r in inc_runs if lr(r) in (5e-4, 1e-3)]
    claim(not any(map(on_majority_class, middle)), "at 5e-4 or 1e-3 the IncreLoRA-style row never collapsed")
    out["dr.inc-middle-runs"] = str(len(middle))
    moved_inc = [f"IncreLoRA-style {v}" for v in moved]
    claim(all(grid.selection()[m]["chosen"] in (5e-4, 1e-3) for m in moved_inc), "every moved variant chose 5e-4/1e-3")
    out["dr.inc-variants-gain"] = span([against_default[m].diff for m in moved_inc], lambda v: f"{v * 100:.1f}")
    out["dr.inc-variants-p"] = span([against_default[m].p_value for m in moved_inc], lambda v: f"{v:.2f}")
    linear_runs = [r for v in VARIANTS for r in finished(grid, f"TriAdaptLoRA linear {v}")]
    claim(not any(on_majority_class(r) for r in linear_runs if lr(r) in (1e-3, 2.5e-3)),
          "TriAdaptLoRA linear left the majority class in every run at 1e-3 and 2.5e-3")
    for method in FIGURE_ROWS:
        claim(grid.values(f"{method} {default}") == tables_grid.values(method),
              f"the default {method} cells reproduce the Tables grid's seed by seed")
    out["dr.inc-default-mean"] = f"{grid.mean(inc_default) * 100:.2f}"

    top_collapsed = [r for r in at_top if on_majority_class(r)]
    top_left = [r for r in inc_runs if not on_majority_class(r)]
    lowest = [r for r in inc_runs if lr(r) == 1e-4]
    hits = lambda rs: span([r.data.metrics["capacity_hits"] for r in rs], lambda v: f"{v:.0f}")  # noqa: E731
    out["dr.cap-collapsed"], out["dr.cap-left"], out["dr.cap-lowest"] = (hits(top_collapsed), hits(top_left),
                                                                         hits(lowest))
    claim(all(r.data.metrics["capacity_hits"] == 0 for r in linear_runs), "TriAdaptLoRA linear never hit the capacity")
    out["dr.inc-rank-use"] = span([grid.mean(f"IncreLoRA-style {v}", "rank_use") for v in VARIANTS],
                                  lambda v: f"{v:.2f}")
    out["dr.lin-rank-use"] = span([grid.mean(f"TriAdaptLoRA linear {v}", "rank_use") for v in VARIANTS],
                                  lambda v: f"{v:.2f}")
    claim(all(grid.mean(f"IncreLoRA-style {v}", "rank_use") < grid.mean(f"TriAdaptLoRA linear {v}", "rank_use")
              for v in VARIANTS), "the IncreLoRA-style rank use is lower in every variant")


def five_epochs(out: dict[str, str], majority: float) -> None:
    """The superseded 5-epoch run (store lost): its compare tables."""
    rows = {m: m for m in TABLE_I} | {m: label.split(" (")[0] if m != "TriAdaptLoRA linear" else m
                                      for m, label in ABLATIONS.items()}
    out["dr5.tables"] = earlier.table("offline-tables", "drug_reviews", rows, ["peft LoRA"])
    data = earlier.rows("offline-tables", "drug_reviews")
    lora = data["peft LoRA"].three()
    on_majority = lambda v: abs(v - majority) < 5e-4  # noqa: E731
    out["dr5.lora-collapsed"] = f"{sum(map(on_majority, lora))} of 3"
    leads = [data[m].diffs["peft LoRA"][0] for m in TRIADAPT]
    out["dr5.triadapt-lead"] = span(leads, lambda v: f"{v * 100:.1f}")
    out["dr5.triadapt-p"] = span([data[m].diffs["peft LoRA"][3] for m in TRIADAPT], p_text)

    names = {"t0=ΔT=4": "t0 = ΔT = 4 (default)", "t0=19": "t0 = 19", "t0=38": "t0 = 38", "ΔT=2": "ΔT = 2",
             "ΔT=12": "ΔT = 12"}
    sens = earlier.rows("offline-sensitivity-drug-reviews", "drug_reviews")
    out["dr5.figures"] = earlier.table("offline-sensitivity-drug-reviews", "drug_reviews",
                                       {f"{m} {v}": f"{m} {label}" for m in FIGURE_ROWS for v, label in names.items()},
                                       ["TriAdaptLoRA linear t0=ΔT=4", "IncreLoRA-style t0=ΔT=4"])
    ahead = [sens[f"TriAdaptLoRA linear {v}"].mean - sens[f"IncreLoRA-style {v}"].mean for v in names]
    claim(min(ahead) > 0, "at 5 epochs TriAdaptLoRA linear's mean is ahead in every variant")
    out["dr5.fig-ahead"] = span(ahead, lambda v: f"{v * 100:.2f}")
    vs_inc = [sens[f"TriAdaptLoRA linear {v}"].diffs["IncreLoRA-style t0=ΔT=4"] for v in names]
    out["dr5.fig-vs-inc"] = span([d[0] for d in vs_inc], lambda v: signed(v))
    out["dr5.fig-vs-inc-p"] = span([d[3] for d in vs_inc], p_text)
    collapsed = {m: sum(on_majority(x) for v in names for x in sens[f"{m} {v}"].three()) for m in FIGURE_ROWS}
    claim(collapsed["TriAdaptLoRA linear"] == 0, "at 5 epochs TriAdaptLoRA linear never stayed on the majority class")
    out["dr5.fig-inc-collapsed"] = f"{collapsed['IncreLoRA-style']} of its {3 * len(names)}"
    out["dr5.fig-runs"] = str(3 * len(names))
    within = [sens[f"TriAdaptLoRA linear {v}"].diffs["TriAdaptLoRA linear t0=ΔT=4"] for v in list(names)[1:]]
    significant = [(v, d) for v, d in zip(list(names)[1:], within) if d[3] < 0.05]
    claim([v for v, _ in significant] == ["ΔT=2"], "at 5 epochs ΔT = 2 is TriAdaptLoRA's one variant with p < 0.05")
    out["dr5.fig-dt2"] = f"{signed(significant[0][1][0])}, p = {p_text(significant[0][1][3])}"


def values(uri: str) -> dict[str, str]:
    out: dict[str, str] = {}
    grid = GridRuns(uri, "offline-tables-drug-reviews")
    tables(grid, out)
    figures(GridRuns(uri, "offline-sensitivity-drug-reviews-long"), grid, out)
    majority = grid.run("IncreLoRA-style", [s for s in grid.seeds("IncreLoRA-style")
                                            if on_majority_class(grid.run("IncreLoRA-style", s))][0])
    five_epochs(out, majority.data.metrics["result_accuracy"])
    out["dr.lr-grid"] = " / ".join(lr_text(v) for v in grid.select_values())
    return out
