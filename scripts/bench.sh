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
build/bench/nestscope_bench "${model_args[@]}" --threads "$THREADS" --train-steps 3 > "$out/nestscope.json"
/usr/bin/python3 bench/peer_pytorch.py "$out/hf" --threads "$THREADS" > "$out/peer.json"
build/bench/nestscope_bench_speed "${model_args[@]}" --threads "$THREADS" --corpus "$CORPUS" > "$out/engine.json"
/usr/bin/python3 - "$out" <<'EOF'
import json, sys
d = sys.argv[1]
ns, peer, eng = (json.load(open(f"{d}/{n}.json")) for n in ("nestscope", "peer", "engine"))
ratio = {
    "decode": ns["decode_tokens_per_s"] / peer["decode_tokens_per_s"],
    "prefill64": ns["prefill64_tokens_per_s"] / peer["prefill64_tokens_per_s"],
    "prefill256": ns["prefill256_tokens_per_s"] / peer["prefill256_tokens_per_s"],
    "same_greedy_ids": ns["greedy_ids"] == peer["greedy_ids"],
}
print(json.dumps({"nestscope": ns, "pytorch_eager": peer, "ratio": ratio, "engine": eng}, indent=2))
EOF
