"""The table blocks of docs/results.md, written from a grid's runs (`results_store.GridRuns`)."""

from __future__ import annotations

from typing import Any

from results_store import GridRuns, ci_text, lr_text, machine, markdown, mean_std, pct, p_text, signed


def selection_cell(grid: GridRuns, method: str) -> str:
    """``65.4 / 69.9 / 70.2 / 65.4 → 1e-3``: seed 0's score at each value and the one chosen; a score from another
    machine than the chosen run's is marked with its machine."""
    entry = grid.selection()[method]
    machines = grid.selection_machines(method)
    chosen_machine = machine(grid.run(method, 0))
    scores = []
    for value, score in entry["scores"].items():
        mark = machines.get(value, chosen_machine)
        scores.append(pct(score) + (f" {mark}" if mark != chosen_machine else ""))
    return " / ".join(scores) + f" → {lr_text(entry['chosen'])}"


def per_seed(grid: GridRuns, method: str, machines: bool = True) -> str:
    values = grid.values(method)
    return ", ".join(pct(v) + (f" {machine(grid.run(method, s))}" if machines else "") for s, v in values.items())


def run_metric(grid: GridRuns, method: str, metric: str) -> str:
    mean = grid.mean(method, metric)
    return "—" if mean is None else f"{mean:.2f}"


NO_GROWTH = {"peft-lora", "full-finetune"}  # approaches whose ranks never change: no capacity to reach


def hits_per_seed(grid: GridRuns, method: str) -> str:
    hits = grid.values(method, "capacity_hits")
    if not hits or grid.run(method, 0).data.tags["triadapt.approach"] in NO_GROWTH:
        return "—"
    return ", ".join(str(int(v)) for v in hits.values())


def accuracy(grid: GridRuns, method: str) -> str:
    return mean_std(list(grid.values(method).values()))


def methods_table(grid: GridRuns, methods: list[str], baseline: str) -> str:
    """Table I: each row's selection, accuracy, seeds, Δ against ``baseline``, rank use and capacity hits."""
    head = ["method", "lr at seed 0: " + " / ".join(lr_text(v) for v in grid.select_values())
            + " → chosen", "accuracy (n = 3)", "per seed", f"Δ vs {baseline} [95 % CI], p", "rank use",
            "capacity hits per seed"]
    rows = [[m, selection_cell(grid, m), accuracy(grid, m), per_seed(grid, m),
             "baseline" if m == baseline else ci_text(grid.diff(m, baseline)), run_metric(grid, m, "rank_use"),
             hits_per_seed(grid, m)] for m in methods]
    return markdown(head, rows)


def ablation_table(grid: GridRuns, labels: dict[str, str], baseline: str, peer: str) -> str:
    """Tables II-III: each ablation against ``baseline`` (with CI) and against ``peer`` (Δ, p)."""
    head = ["method", "lr at seed 0: " + " / ".join(lr_text(v) for v in grid.select_values())
            + " → chosen", "accuracy (n = 3)", "per seed", f"Δ vs {baseline} [95 % CI], p", f"Δ vs {peer}, p",
            "capacity hits per seed"]
    rows = []
    for method, label in labels.items():
        vs_peer = grid.diff(method, peer)
        rows.append([label, selection_cell(grid, method), accuracy(grid, method), per_seed(grid, method),
                     "baseline" if method == baseline else ci_text(grid.diff(method, baseline)),
                     f"{signed(vs_peer.diff)}, {p_text(vs_peer.p_value)}", hits_per_seed(grid, method)])
    return markdown(head, rows)


def sensitivity_table(grid: GridRuns, variants: dict[str, str], methods: list[str]) -> str:
    """Figures 3-4: per variant and method, the chosen rate and seeds, the mean, Δ against the method's default
    variant (the first) and rank use."""
    head = ["variant"]
    for method in methods:
        head += [f"{method}: lr, per seed", "mean (n = 3)", "Δ vs its default [95 % CI], p", "rank use"]
    rows = []
    default = next(iter(variants))
    for variant, label in variants.items():
        row = [label]
        for method in methods:
            name = f"{method} {variant}"
            chosen = lr_text(grid.selection()[name]["chosen"])
            row += [f"{chosen}: {per_seed(grid, name)}", accuracy(grid, name),
                    "baseline" if variant == default else ci_text(grid.diff(name, f"{method} {default}")),
                    run_metric(grid, name, "rank_use")]
        rows.append(row)
    return markdown(head, rows)


def head_to_head(grid: GridRuns, variants: dict[str, str], method: str, peer: str) -> list[tuple[str, Any, str]]:
    """``method`` − ``peer`` at each variant, paired on seeds: (variant, the difference, its text), the text with the
    variant's label (the default's as "default") and a difference with p < 0.05 in bold."""
    out = []
    for variant, label in variants.items():
        d = grid.diff(f"{method} {variant}", f"{peer} {variant}")
        bold = "**" if (d.p_value or 1) < 0.05 else ""
        name = "default" if label.endswith("(default)") else label
        out.append((variant, d, f"{name} {bold}{signed(d.diff)}{bold} [{signed(d.ci_low)}, {signed(d.ci_high)}], "
                                f"{bold}p = {p_text(d.p_value)}{bold}"))
    return out
