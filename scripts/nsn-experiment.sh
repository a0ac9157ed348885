#!/usr/bin/env bash
# Reproduces the NSN numbers in the README on the default model (needs ../shared/data).
#   1. plain SVD truncation of the dense default model (no training): frontier
#   2. surgical conversion + multi-rank fine-tuning (uncertainty-weighted objective)
#   3. the fine-tuned NSN frontier, uniform ranks and per-layer energy allocation
# Outputs go to ${OUT:-runs/nsn}. Usage: scripts/nsn-experiment.sh [finetune steps] [batch]
# WINDOWS=n scores the sweeps on the first n validation windows (default: all 435); the
# 25/50/75% acceptance points always use every window.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=${CLI:-build/app/nestscope-cli}
CORPUS=${CORPUS:-../shared/data/tinyshakespeare.txt}
OUT=${OUT:-runs/nsn}
STEPS=${1:-600}
BATCH=${2:-16}
FRACTIONS=0.125,0.25,0.375,0.5,0.625,0.75,0.875
WINDOWS=${WINDOWS:-0}
mkdir -p "$OUT"
[ -f "$CORPUS" ] || { echo "nsn-experiment: $CORPUS is missing" >&2; exit 1; }

$CLI nsn frontier --corpus "$CORPUS" --fractions $FRACTIONS --energy --sensitivity --windows "$WINDOWS" --rows "$OUT/svd.csv" --json > "$OUT/svd.json"
$CLI nsn frontier --corpus "$CORPUS" --ranks 8,16,24,32,40,48,56,64,80,96,112,128 --windows "$WINDOWS" --rows "$OUT/svd-ranks.csv" --json > "$OUT/svd-ranks.json"
$CLI nsn finetune --corpus "$CORPUS" --out "$OUT/picogpt-nsn.safetensors" --steps "$STEPS" --batch "$BATCH" --lr 5e-4 \
    --min-rank 16 --buckets 8 --curriculum 0.3 --json > "$OUT/finetune.json"
$CLI nsn frontier --model "$OUT/picogpt-nsn.safetensors" --corpus "$CORPUS" --fractions $FRACTIONS --energy --sensitivity \
    --windows "$WINDOWS" --rows "$OUT/nsn.csv" --json > "$OUT/nsn.json"
$CLI nsn frontier --model "$OUT/picogpt-nsn.safetensors" --corpus "$CORPUS" \
    --ranks 8,16,24,32,40,48,56,64,80,96,112,128 --windows "$WINDOWS" --rows "$OUT/nsn-ranks.csv" --json > "$OUT/nsn-ranks.json"
for f in 0.25 0.5 0.75; do
  $CLI nsn frontier --model "$OUT/picogpt-nsn.safetensors" --corpus "$CORPUS" --mac-fraction $f --json
done | tee "$OUT/acceptance.jsonl"
