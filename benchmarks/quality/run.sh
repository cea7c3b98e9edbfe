#!/usr/bin/env bash
# Quality on the offline datasets: the paper's Tables I-III with the peers (offline-tables.yaml: 3 seeds,
# one learning-rate protocol for every row; offline-tables-drug-reviews.yaml: the drug-reviews half again,
# twice as long) and its Figures 3-4 (offline-sensitivity-*.yaml), causal-LM SFT
# on SmolLM2 (smollm2-sft.yaml, peft LoRA vs TriAdaptLoRA), then the comparison tables (Markdown and CSV,
# with CI and p-value against a baseline row) next to this script.
# Resumable: rerun to continue where it stopped.
#   bash benchmarks/quality/run.sh            (about 18 hours on 2 idle CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
uri="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/benchmarks/quality/mlflow.db}"
out=benchmarks/quality

triadapt ablate benchmarks/ablations/offline-tables.yaml --tracking-uri "$uri" --no-progress
triadapt compare --grid offline-tables --tracking-uri "$uri" --baseline "peft LoRA" \
  --baseline "TriAdaptLoRA linear" --markdown "$out/offline-tables.md" --csv "$out/offline-tables.csv"
triadapt ablate benchmarks/ablations/offline-tables-drug-reviews.yaml --tracking-uri "$uri" --no-progress
triadapt compare --grid offline-tables-drug-reviews --tracking-uri "$uri" --baseline "peft LoRA" \
  --baseline "TriAdaptLoRA linear" --markdown "$out/offline-tables-drug-reviews.md" \
  --csv "$out/offline-tables-drug-reviews.csv"

for grid in benchmarks/ablations/offline-sensitivity-*.yaml; do
  name=$(basename "$grid" .yaml)
  triadapt ablate "$grid" --tracking-uri "$uri" --no-progress
  triadapt compare --grid "$name" --tracking-uri "$uri" --baseline "TriAdaptLoRA linear t0=ΔT=4" \
    --baseline "IncreLoRA-style t0=ΔT=4" --markdown "$out/$name.md" --csv "$out/$name.csv"
done

triadapt ablate benchmarks/ablations/smollm2-sft.yaml --tracking-uri "$uri" --no-progress
triadapt compare --grid smollm2-sft --tracking-uri "$uri" --baseline "peft LoRA" \
  --markdown "$out/smollm2-sft.md" --csv "$out/smollm2-sft.csv"
