#!/usr/bin/env bash
# Every speed benchmark in one command, one JSON object on stdout (issue 10's harness):
#   nestscope      nestscope_bench: batch-1 decode from token 0, 64- and 256-token prefill, training
#   pytorch_eager  bench/peer_pytorch.py: the same model exported as a GPT-2 folder, run by
#                  Debian's PyTorch in eager mode, the same measurements
#   ratio          NestScope / PyTorch eager (decode tokens/s, prefill tokens/s); same_greedy_ids
#                  says both decoded the same 64 tokens
#   engine         nestscope_bench_speed: decode per mechanism with time and MAC ratios, prefill
#                  through the Engine, slider-to-first-token latency, sweep wall time
# THREADS (default: all cores) sets both programs' intra-op threads; MODEL a checkpoint (default:
# the embedded PicoGPT); CORPUS the sweep's text. Builds first unless NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
CORPUS=${CORPUS:-../shared/data/tinyshakespeare.txt}
[ "${NO_BUILD:-0}" = 1 ] || bash scripts/build.sh >&2
out=build/bench-run
rm -rf "$out" && mkdir -p "$out"
model_args=()
[ -n "${MODEL:-}" ] && model_args=(--model "$MODEL")
build/app/nestscope-cli export "${model_args[@]}" --hf "$out/hf" --json > "$out/export.json"
# A shared machine slows whichever program runs while something else does, so the two alternate
# for ROUNDS rounds and each side keeps its best round per measure (interference only slows).
for r in $(seq "${ROUNDS:-5}"); do
  build/bench/nestscope_bench "${model_args[@]}" --threads "$THREADS" --train-steps 0 > "$out/nestscope-$r.json"
  # OPENBLAS_NUM_THREADS: PyTorch's BLAS would otherwise take every core whatever THREADS says.
  OPENBLAS_NUM_THREADS=$THREADS /usr/bin/python3 bench/peer_pytorch.py "$out/hf" --threads "$THREADS" > "$out/peer-$r.json"
done
build/bench/nestscope_bench "${model_args[@]}" --threads "$THREADS" --decode-tokens 1 --train-steps 3 > "$out/train.json"
build/bench/nestscope_bench_speed "${model_args[@]}" --threads "$THREADS" --corpus "$CORPUS" > "$out/engine.json"
/usr/bin/python3 - "$out" "${ROUNDS:-5}" <<'EOF'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
runs = {side: [json.load(open(f"{d}/{side}-{r}.json")) for r in range(1, rounds + 1)] for side in ("nestscope", "peer")}
keys = ("decode_tokens_per_s", "prefill64_tokens_per_s", "prefill256_tokens_per_s")
best = {side: {k: max(x[k] for x in rs) for k in keys} for side, rs in runs.items()}
for side, rs in runs.items():
    best[side]["greedy_ids"] = rs[0]["greedy_ids"]
    best[side]["rounds"] = {k: [round(x[k]) for x in rs] for k in keys}
ns, peer = best["nestscope"], best["peer"]
ratio = {k.replace("_tokens_per_s", ""): ns[k] / peer[k] for k in keys}
ratio["same_greedy_ids"] = all(x["greedy_ids"] == ns["greedy_ids"] for x in runs["nestscope"] + runs["peer"])
train = json.load(open(f"{d}/train.json"))
ns["train_tokens_per_s"] = train["train_tokens_per_s"]
ns["threads"] = train["threads"]
print(json.dumps({"nestscope": ns, "pytorch_eager": peer, "ratio": ratio, "rounds": rounds,
                  "engine": json.load(open(f"{d}/engine.json"))}, indent=2))
EOF
