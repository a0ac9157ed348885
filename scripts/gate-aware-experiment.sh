#!/usr/bin/env bash
# Gate-aware fine-tuning of the default model and its gate scores (README, gate section).
# Needs ../shared/data/tinyshakespeare.txt; writes runs/gateaware/. About 12 min per 600 steps on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=build/app/nestscope-cli
C=../shared/data/tinyshakespeare.txt
OUT=runs/gateaware
mkdir -p "$OUT"
STEPS=${STEPS:-600}
SEED=${SEED:-1337}
# HEAD_ACTIVE=0.5 adds head-aware training: each sequence also keeps a random half of the heads
# per layer (train --head-active), for the "blocks + heads" rows.
HEAD_ACTIVE=${HEAD_ACTIVE:-1}
# HEAD_GLOBAL=1 trains for the model-wide head allocation instead (train --head-global: each sequence
# keeps the probes' top half of all heads, with noise; the "model-wide" rows).
HEAD_GLOBAL=${HEAD_GLOBAL:-0}
# A continuation stage: INIT=<previous stage's checkpoint> LR=1.5e-4 NAME=<new name>; DISTILL=0.5 mixes
# in the KL to the default model's next-token distribution (train --distill).
INIT=${INIT:-resources/models/picogpt.safetensors}
LR=${LR:-3e-4}
DISTILL=${DISTILL:-0}
# SENSING=32 trains on the blocks the sensing gate picks with 32 measurements (PCA + MMSE, prior from
# each batch; train --mlp-block-sensing) instead of the oracle's.
SENSING=${SENSING:-0}
NAME=${NAME:-picogpt-ga50$([ "$HEAD_ACTIVE" = 1 ] || echo "-h$HEAD_ACTIVE")$([ "$HEAD_GLOBAL" = 1 ] && echo "g" || true)}
EXTRA=()
[ "$HEAD_GLOBAL" = 1 ] && EXTRA+=(--head-global)
$CLI train --init "$INIT" --corpus "$C" --steps "$STEPS" --batch 32 --lr "$LR" --warmup 20 --seed "$SEED" --distill "$DISTILL" \
    --mlp-block-active 0.5 --mlp-block-sensing "$SENSING" --head-active "$HEAD_ACTIVE" "${EXTRA[@]}" --out "$OUT/$NAME.safetensors" --json > "$OUT/train-$NAME.json"
# The default model is scored as the baseline once, with the first stage; later stages score only themselves.
MODELS=("$OUT/$NAME.safetensors")
[ "$INIT" = resources/models/picogpt.safetensors ] && MODELS=("$INIT" "${MODELS[@]}")
for m in "${MODELS[@]}"; do
  $CLI frontier --model "$m" --budgets scripts/gate-aware-budgets.json --eval "$C" --no-latency \
      --out "$OUT/rows-$(basename "$m" .safetensors).jsonl"
done
