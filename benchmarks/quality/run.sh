#!/usr/bin/env bash
# Quality on the offline datasets: the paper's Tables I-III with the peers (offline-tables.yaml: 3 seeds,
# one learning-rate protocol for every row) and its Figures 3-4 (offline-sensitivity-*.yaml); the
# drug-reviews half again, twice as long (offline-tables-drug-reviews.yaml and
# offline-sensitivity-drug-reviews-long.yaml, in their own store, kept in git as drug-reviews-long.tar.xz);
# causal-LM SFT on SmolLM2 (smollm2-sft.yaml, peft LoRA vs TriAdaptLoRA); then the comparison tables
# (Markdown and CSV, with CI and p-value against baseline rows) next to this script.
# Resumable: rerun to continue where it stopped. JOBS=N runs N cells at once (triadapt ablate --jobs).
#   bash benchmarks/quality/run.sh            (about 26 hours on 2 idle CPU cores with JOBS=1;
#                                              the long drug-reviews grids: all 120 cells done, H200 and CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
uri="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/benchmarks/quality/mlflow.db}"
out=benchmarks/quality
jobs="${JOBS:-1}"
python="${PYTHON:-python3}"

triadapt ablate benchmarks/ablations/offline-tables.yaml --tracking-uri "$uri" --no-progress --jobs "$jobs"
triadapt compare --grid offline-tables --tracking-uri "$uri" --baseline "peft LoRA" \
  --baseline "TriAdaptLoRA linear" --markdown "$out/offline-tables.md" --csv "$out/offline-tables.csv"
for task in rotten-tomatoes drug-reviews; do
  grid=offline-sensitivity-$task
  triadapt ablate benchmarks/ablations/$grid.yaml --tracking-uri "$uri" --no-progress --jobs "$jobs"
  triadapt compare --grid $grid --tracking-uri "$uri" --baseline "TriAdaptLoRA linear t0=ΔT=4" \
    --baseline "IncreLoRA-style t0=ΔT=4" --markdown "$out/$grid.md" --csv "$out/$grid.csv"
done

# The long drug-reviews grids resume from the committed store; pack it again afterwards and commit it.
long=$out/drug-reviews-long
[ -f "$long/mlflow.db" ] || "$python" $out/store_archive.py unpack "$long.tar.xz" "$long"
long_uri="sqlite:///$PWD/$long/mlflow.db"
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
"$python" $out/store_archive.py pack "$long" "$long.tar.xz"

triadapt ablate benchmarks/ablations/smollm2-sft.yaml --tracking-uri "$uri" --no-progress --jobs "$jobs"
triadapt compare --grid smollm2-sft --tracking-uri "$uri" --baseline "peft LoRA" \
  --markdown "$out/smollm2-sft.md" --csv "$out/smollm2-sft.csv"
