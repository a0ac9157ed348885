#!/usr/bin/env bash
# The three mechanisms on stories260K (a Llama-architecture model pretrained by others), the
# numbers in docs/results/stories260K.md. Needs ../shared/models/stories260K. Outputs go to
# ${OUT:-runs/stories260K}; a step whose output exists is skipped, so a rerun resumes.
#   1. a distillation corpus sampled from the dense model itself (recipe in corpus.txt.json)
#   2. fine-tunes, each distilled from the dense model (KL, τ = 1), batch 32 × 256:
#      NSN multi-rank (projections only: a variant of the untouched model), MPO nested-χ from the
#      lossless TT-SVD chain (projections only), MPO at χ = 12 (≤ 50% of the projection
#      parameters), and a gate-aware fine-tune at 50% blocks + 50% heads (all weights)
#   3. one frontier file: every checkpoint through its budget file, scored on the held-out 10% of
#      the corpus, agreement and KL against the dense model
#   4. second recipes, 3,000 steps of batch 8 × 256 each (skipped with SECOND=0): NSN with the sampled
#      ranks narrowed to 8…32 around the half-MACs point; MPO at χ = 12 training every weight (the
#      embeddings and norms adapt to the chains); the gate-aware fine-tune on the sensing gate's own
#      picks (m = 22) instead of the oracle's
# Usage: scripts/stories260k-experiment.sh [NSN steps] [MPO steps] [gate steps]
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=${CLI:-build/app/nestscope-cli}
DENSE=${DENSE:-../shared/models/stories260K}
OUT=${OUT:-runs/stories260K}
NSN_STEPS=${1:-600}
MPO_STEPS=${2:-300}
GATE_STEPS=${3:-300}
B=scripts/stories260k
[ -d "$DENSE" ] || { echo "stories260k-experiment: $DENSE is missing" >&2; exit 1; }
mkdir -p "$OUT"
C="$OUT/corpus.txt"
FT=(--teacher "$DENSE" --distill 1 --batch 32 --seq-len 256 --warmup 30)
ATTN_MLP=attn.q,attn.k,attn.v,attn.o,mlp.gate,mlp.up,mlp.down
run() { local out=$1; shift; [ -s "$out" ] && { echo "have $out"; return; }; echo "== $out"; "$@"; }

run "$C" $CLI corpus -m "$DENSE" --samples 4000 --max-tokens 256 --seed 1 -o "$C" --json
run "$OUT/nsn.safetensors" $CLI nsn finetune -m "$DENSE" --corpus "$C" "${FT[@]}" --projections-only \
    --steps "$NSN_STEPS" --lr 1e-3 --curriculum 0.3 --min-rank 4 -o "$OUT/nsn.safetensors" --json
run "$OUT/mpo-full.safetensors" $CLI mpo convert -m "$DENSE" --families $ATTN_MLP --bond 4096 -o "$OUT/mpo-full.safetensors" --json
run "$OUT/mpo-nested.safetensors" $CLI mpo finetune -m "$OUT/mpo-full.safetensors" --corpus "$C" "${FT[@]}" \
    --projections-only --nested --min-bond 2 --curriculum 0.3 --steps "$MPO_STEPS" --lr 1e-3 -o "$OUT/mpo-nested.safetensors" --json
run "$OUT/mpo12.safetensors" $CLI mpo convert -m "$DENSE" --families $ATTN_MLP --bond 12 -o "$OUT/mpo12.safetensors" --json
run "$OUT/mpo12-ft.safetensors" $CLI mpo finetune -m "$OUT/mpo12.safetensors" --corpus "$C" "${FT[@]}" \
    --projections-only --steps "$MPO_STEPS" --lr 1e-3 -o "$OUT/mpo12-ft.safetensors" --json
run "$OUT/gate50.safetensors" $CLI train --init "$DENSE" --corpus "$C" "${FT[@]}" --steps "$GATE_STEPS" --lr 5e-4 \
    --weight-decay 0 --mlp-block-active 0.5 --mlp-block 4 --head-active 0.5 --head-global -o "$OUT/gate50.safetensors" --json

if [ "${SECOND:-1}" != 0 ]; then
  F2=(--teacher "$DENSE" --distill 1 --batch 8 --seq-len 256 --warmup 100 --steps 3000)
  run "$OUT/nsn-r2.safetensors" $CLI nsn finetune -m "$DENSE" --corpus "$C" "${F2[@]}" --projections-only \
      --lr 1e-3 --curriculum 0.1 --min-rank 8 --max-sample-rank 32 -o "$OUT/nsn-r2.safetensors" --json
  run "$OUT/gate50-r2.safetensors" $CLI train --init "$DENSE" --corpus "$C" "${F2[@]}" --lr 5e-4 --weight-decay 0 \
      --mlp-block-active 0.5 --mlp-block 4 --mlp-block-sensing 22 --head-active 0.5 --head-global -o "$OUT/gate50-r2.safetensors" --json
  run "$OUT/mpo12-r2.safetensors" $CLI mpo finetune -m "$OUT/mpo12.safetensors" --corpus "$C" "${F2[@]}" \
      --lr 1e-3 -o "$OUT/mpo12-r2.safetensors" --json
fi

ROWS="$OUT/frontier.jsonl"
# WINDOWS held-out windows of 512 tokens per row (the held-out 10% has 196): 64 = 32,768 tokens.
SW=(--eval "$C" --windows "${WINDOWS:-64}" --reference "$DENSE" --gate-details -o "$ROWS")
$CLI frontier -m "$DENSE" --budgets $B/dense-budgets.json "${SW[@]}" --json > "$OUT/dense.json"
$CLI frontier -m "$OUT/nsn.safetensors" --budgets $B/nsn-budgets.json "${SW[@]}" --json > "$OUT/nsn.json"
$CLI frontier -m "$OUT/mpo-nested.safetensors" --budgets $B/mpo-nested-budgets.json "${SW[@]}" --json > "$OUT/mpo-nested.json"
$CLI frontier -m "$OUT/mpo12-ft.safetensors" --budgets $B/mpo-chi-budgets.json "${SW[@]}" --json > "$OUT/mpo12.json"
$CLI frontier -m "$OUT/gate50.safetensors" --budgets $B/gate-budgets.json "${SW[@]}" --json > "$OUT/gate50.json"
if [ "${SECOND:-1}" != 0 ]; then
  # the second recipes' rows go to their own file: their series carry the same names
  SW2=(--eval "$C" --windows "${WINDOWS:-64}" --reference "$DENSE" --gate-details -o "$OUT/frontier-r2.jsonl")
  $CLI frontier -m "$OUT/nsn-r2.safetensors" --budgets $B/nsn-budgets.json "${SW2[@]}" --json > "$OUT/nsn-r2.json"
  $CLI frontier -m "$OUT/gate50-r2.safetensors" --budgets $B/gate-budgets.json "${SW2[@]}" --json > "$OUT/gate50-r2.json"
  $CLI frontier -m "$OUT/mpo12-r2.safetensors" --budgets $B/mpo-chi-budgets.json "${SW2[@]}" --json > "$OUT/mpo12-r2.json"
fi
echo "rows: $ROWS"
