#!/usr/bin/env bash
# Quality on the offline datasets: the grids that mirror the paper's Tables I-III, 3 seeds each,
# then the comparison tables (Markdown and CSV) next to this script. Resumable: rerun to continue.
#   bash benchmarks/quality/run.sh            (63 cells; about 3 hours on 2 idle CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
uri="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/benchmarks/quality/mlflow.db}"
for table in table1-methods table1-drug-reviews table2-orthogonal table3-normalisation; do
  triadapt ablate "benchmarks/ablations/offline-$table.yaml" --tracking-uri "$uri" --no-progress
done
for grid in offline-table1 offline-table1-drug offline-table2 offline-table3; do
  triadapt compare --grid "$grid" --experiment triadapt-offline --tracking-uri "$uri" \
    --markdown "benchmarks/quality/$grid.md" --csv "benchmarks/quality/$grid.csv"
done
triadapt compare --grid offline-table1-drug --experiment triadapt-offline --tracking-uri "$uri" --metric macro_f1 \
  --csv benchmarks/quality/offline-table1-drug-macro-f1.csv
