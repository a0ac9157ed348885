#!/usr/bin/env bash
# Reproduces the sensing-gate numbers in the README on the default model (needs ../shared/data).
#   1. the frontier at 25 / 50 / 75% active MLP blocks: sensing (PCA measurements, MMSE recovery,
#      m = N/16) next to oracle top-k, static (calibrated) and random supports, all windows
#   2. the same at 50% without the co-activation neuron order (first 60 windows)
#   3. the recovery curve over m at 50% active for three measurement / recovery pairs (60 windows)
#   4. attention heads at 50% / 75% kept per layer: knockout probes vs oracle vs random (60 windows)
# Outputs go to ${OUT:-runs/gate}.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=${CLI:-build/app/nestscope-cli}
C=${CORPUS:-../shared/data/tinyshakespeare.txt}
OUT=${OUT:-runs/gate}
mkdir -p "$OUT"
[ -f "$C" ] || { echo "gate-experiment: $C is missing" >&2; exit 1; }
$CLI gate frontier --corpus "$C" --actives 0.25,0.5,0.75 --measurement pca --recovery mmse --calibration-windows 32 \
    --rows "$OUT/frontier.csv" --json > "$OUT/frontier.json"
$CLI gate frontier --corpus "$C" --actives 0.5 --no-cluster --measurement pca --recovery mmse --calibration-windows 32 \
    --windows 60 --json > "$OUT/frontier-unclustered.json"
for mr in "rademacher iht" "rademacher mmse" "pca mmse"; do
  set -- $mr
  $CLI gate frontier --corpus "$C" --policies sensing --actives 0.5 --measurements 8,16,32,64,128 --measurement "$1" \
      --recovery "$2" --calibration-windows 32 --windows 60 --json > "$OUT/recovery-$1-$2.json"
done
$CLI gate frontier --corpus "$C" --policies sensing --actives 0.5 --measurement pca --recovery mmse \
    --head-actives 0.5,0.75 --calibration-windows 32 --windows 60 --json > "$OUT/heads.json"
