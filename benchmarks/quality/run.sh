#!/usr/bin/env bash
# Quality on the offline datasets, one store per dataset, each kept in git as an archive next to this script
# (store_archive.py): the paper's Tables I-III with the peers and its Figures 3-4 on Rotten Tomatoes
# (offline-tables.yaml, offline-sensitivity-rotten-tomatoes.yaml; rotten-tomatoes.tar.xz) and on the drug
# reviews (offline-tables-drug-reviews.yaml, offline-sensitivity-drug-reviews-long.yaml; drug-reviews-long.tar.xz);
# causal-LM SFT on SmolLM2 (smollm2-sft.yaml, peft LoRA vs TriAdaptLoRA; smollm2-sft.tar.xz); then
# the comparison tables (Markdown and CSV, with CI and p-value against baseline rows) next to this script, and
# docs/results.md from the stores (make_results.py).
# Resumable: rerun to continue where it stopped (a grid's store is unpacked from its archive when missing, and
# packed again after each grid). JOBS=N runs N cells at once (triadapt ablate --jobs); on 2 CPU cores it does
# not pay (benchmarks/perf/grid_throughput.py).
#   bash benchmarks/quality/run.sh   (Rotten Tomatoes: 140 cells, about 6 hours on 2 idle CPU cores; drug reviews:
#                                     all 120 cells done, H200 and CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=benchmarks/quality
jobs="${JOBS:-1}"
python="${PYTHON:-python3}"

# A store kept in git: unpacked from its archive when missing; `pack` writes the archive again.
store() { [ -f "$out/$1/mlflow.db" ] || "$python" $out/store_archive.py unpack "$out/$1.tar.xz" "$out/$1"; }
pack() { "$python" $out/store_archive.py pack "$out/$1" "$out/$1.tar.xz"; }

[ -f "$out/rotten-tomatoes.tar.xz" ] && store rotten-tomatoes
rt_uri="sqlite:///$PWD/$out/rotten-tomatoes/mlflow.db"
triadapt ablate benchmarks/ablations/offline-tables.yaml --tracking-uri "$rt_uri" --no-progress --jobs "$jobs"
pack rotten-tomatoes
triadapt compare --grid offline-tables --tracking-uri "$rt_uri" --baseline "peft LoRA" \
  --baseline "TriAdaptLoRA linear" --markdown "$out/offline-tables.md" --csv "$out/offline-tables.csv"
grid=offline-sensitivity-rotten-tomatoes
triadapt ablate benchmarks/ablations/$grid.yaml --tracking-uri "$rt_uri" --no-progress --jobs "$jobs"
pack rotten-tomatoes
triadapt compare --grid $grid --tracking-uri "$rt_uri" --baseline "TriAdaptLoRA linear t0=ΔT=4" \
  --baseline "IncreLoRA-style t0=ΔT=4" --markdown "$out/$grid.md" --csv "$out/$grid.csv"

store drug-reviews-long
long_uri="sqlite:///$PWD/$out/drug-reviews-long/mlflow.db"
triadapt ablate benchmarks/ablations/offline-tables-drug-reviews.yaml --tracking-uri "$long_uri" --no-progress \
  --jobs "$jobs"
triadapt compare --grid offline-tables-drug-reviews --tracking-uri "$long_uri" --baseline "peft LoRA" \
  --baseline "TriAdaptLoRA linear" --markdown "$out/offline-tables-drug-reviews.md" \
  --csv "$out/offline-tables-drug-reviews.csv"
triadapt ablate benchmarks/ablations/offline-sensitivity-drug-reviews-long.yaml --tracking-uri "$long_uri" \
  --no-progress --jobs "$jobs"
triadapt compare --grid offline-sensitivity-drug-reviews-long --tracking-uri "$long_uri" \
  --baseline "TriAdaptLoRA linear t0=ΔT=8" --baseline "IncreLoRA-style t0=ΔT=8" \
  --markdown "$out/offline-sensitivity-drug-reviews-long.md" --csv "$out/offline-sensitivity-drug-reviews-long.csv"
pack drug-reviews-long

[ -f "$out/smollm2-sft.tar.xz" ] && store smollm2-sft
sft_uri="sqlite:///$PWD/$out/smollm2-sft/mlflow.db"
triadapt ablate benchmarks/ablations/smollm2-sft.yaml --tracking-uri "$sft_uri" --no-progress --jobs "$jobs"
pack smollm2-sft
triadapt compare --grid smollm2-sft --tracking-uri "$sft_uri" --baseline "peft LoRA" \
  --markdown "$out/smollm2-sft.md" --csv "$out/smollm2-sft.csv"
