"""docs/results.md on the first runs of the Rotten Tomatoes grids and of the SmolLM2 SFT grid, whose stores are lost:
their `triadapt compare` tables (`earlier/`), and the few numbers those tables still support."""

from __future__ import annotations

import results_earlier as earlier
from results_drug_reviews import claim, span
from results_store import MINUS, p_text, signed

ROWS = ["peft LoRA", "TriAdaptLoRA linear", "TriAdaptLoRA nonlinear", "TriAdaptLoRA fixed-k", "peft AdaLoRA",
        "IncreLoRA-style", "full fine-tuning", "TriAdaptLoRA linear non-orthogonal", "TriAdaptLoRA linear no norm",
        "TriAdaptLoRA linear norm sqrt(r)"]
VARIANTS = ["t0=ΔT=4", "t0=19", "t0=38", "ΔT=2", "ΔT=12"]
SFT = ["peft LoRA", "TriAdaptLoRA linear", "TriAdaptLoRA nonlinear"]


def rotten_tomatoes(out: dict[str, str]) -> None:
    out["rt1.tables"] = earlier.table("offline-tables", "rotten_tomatoes", {m: m for m in ROWS},
                                      ["peft LoRA", "TriAdaptLoRA linear"])
    data = earlier.rows("offline-tables", "rotten_tomatoes")
    triadapt = [m for m in ROWS if m.startswith("TriAdaptLoRA")]
    claim(all(data[m].diffs["peft LoRA"][0] > 0 for m in triadapt),
          "in the first Rotten Tomatoes run every TriAdaptLoRA row's mean is above peft LoRA's")
    out["rt1.triadapt-lead"] = span([data[m].diffs["peft LoRA"][0] for m in triadapt], lambda v: f"{v * 100:.2f}")
    significant = [m for m in ROWS[1:] if data[m].diffs["peft LoRA"][3] < 0.05]
    claim(significant == ["TriAdaptLoRA linear no norm"], "only 'no norm' had p < 0.05 against peft LoRA")
    no_norm = data["TriAdaptLoRA linear no norm"].diffs["peft LoRA"]
    out["rt1.no-norm"] = f"{signed(no_norm[0])}, p = {p_text(no_norm[3])}"
    out["rt1.comparisons"] = str(len(ROWS) - 1)
    best = max(ROWS, key=lambda m: data[m].mean)
    claim(best == "full fine-tuning", "full fine-tuning had the best mean in the first Rotten Tomatoes run")
    claim(data["peft AdaLoRA"].mean > data["TriAdaptLoRA linear"].mean,
          "peft AdaLoRA's mean was above TriAdaptLoRA linear's in the first Rotten Tomatoes run")

    names = {v: v.replace("=", " = ").replace("t0 = ΔT = 4", "t0 = ΔT = 4 (default)") for v in VARIANTS}
    rows = {f"{m} {v}": f"{m} {label}" for m in ("TriAdaptLoRA linear", "IncreLoRA-style") for v, label in names.items()}
    out["rt1.figures"] = earlier.table("offline-sensitivity-rotten-tomatoes", "rotten_tomatoes", rows,
                                       ["TriAdaptLoRA linear t0=ΔT=4", "IncreLoRA-style t0=ΔT=4"])
    sens = earlier.rows("offline-sensitivity-rotten-tomatoes", "rotten_tomatoes")
    ahead = [sens[f"TriAdaptLoRA linear {v}"].mean - sens[f"IncreLoRA-style {v}"].mean for v in VARIANTS]
    claim(min(ahead) > 0, "TriAdaptLoRA linear's mean was ahead in every Rotten Tomatoes variant")
    out["rt1.fig-ahead"] = span(ahead, lambda v: f"{v * 100:.1f}")
    within = [abs(sens[f"{m} {v}"].mean - sens[f"{m} t0=ΔT=4"].mean) for m in ("TriAdaptLoRA linear", "IncreLoRA-style")
              for v in VARIANTS]
    out["rt1.fig-within"] = f"{max(within) * 100:.1f}"


def smollm2(out: dict[str, str]) -> None:
    out["sft1.table"] = earlier.table("smollm2-sft", "rotten_tomatoes_sft", {m: m for m in SFT}, ["peft LoRA"],
                                      scale=1.0, digits=4, seed_digits=4)
    data = earlier.rows("smollm2-sft", "rotten_tomatoes_sft")
    linear = data["TriAdaptLoRA linear"].diffs["peft LoRA"]
    nonlinear = data["TriAdaptLoRA nonlinear"].diffs["peft LoRA"]
    claim(linear[3] > 0.5, "TriAdaptLoRA linear and peft LoRA could not be told apart on SmolLM2")
    claim(nonlinear[1] > 0, "TriAdaptLoRA nonlinear's perplexity was above peft LoRA's, the whole CI")
    out["sft1.linear"] = f"p = {p_text(linear[3])}"
    out["sft1.nonlinear"] = (f"{nonlinear[0]:+.4f} (95 % CI {nonlinear[1]:+.4f} to {nonlinear[2]:+.4f}, paired "
                             f"p = {p_text(nonlinear[3])})").replace("-", MINUS)


def values() -> dict[str, str]:
    out: dict[str, str] = {}
    rotten_tomatoes(out)
    smollm2(out)
    return out
