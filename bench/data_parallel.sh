#!/usr/bin/env bash
# Data-parallel fine-tuning on this machine: one process (all cores, batch 2b) against two ranks
# on 127.0.0.1 (one core each, batch b each: the same steps), the same NSN fine-tune of MODEL
# (default ../shared/models/stories260K, else the embedded PicoGPT) on CORPUS. One JSON object:
# tokens/s of each, and the ranks' all-reduce seconds per step (Gloo over loopback TCP).
# STEPS (default 60), BATCH b (default 16), SEQ (default 256). Needs an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI=${CLI:-build/app/nestscope-cli}
MODEL=${MODEL:-../shared/models/stories260K}
CORPUS=${CORPUS:-resources/corpus/stories260K-heldout.txt}
STEPS=${STEPS:-60}
B=${BATCH:-16}
SEQ=${SEQ:-256}
model=()
[ -e "$MODEL" ] && model=(-m "$MODEL")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
ft=("$CLI" nsn finetune "${model[@]}" --corpus "$CORPUS" --steps "$STEPS" --seq-len "$SEQ" --warmup 5 --json)
NESTSCOPE_THREADS=$(nproc) "${ft[@]}" --batch $((2 * B)) -o "$T/one.safetensors" > "$T/one.json" 2>/dev/null
port=$((30000 + RANDOM % 20000))
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port NESTSCOPE_THREADS=1 \
    "${ft[@]}" --batch "$B" -o "$T/dp.safetensors" > "$T/dp-$r.json" 2>"$T/dp-$r.log" &
done
wait
/usr/bin/python3 - "$T" "$STEPS" "$B" "$SEQ" "${MODEL}" <<'PY'
import json, sys
d, steps, b, seq, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
one = json.load(open(f"{d}/one.json"))
dp = json.load(open(f"{d}/dp-0.json"))
print(json.dumps({
    "model": model, "steps": steps, "sequences_per_step": 2 * b, "seq_len": seq,
    "one_process": {"threads": "all cores", "tokens_per_s": round(one["tokens_per_s"]), "seconds": round(one["seconds"], 2)},
    "two_ranks": {"threads_each": 1, "backend": "gloo, 127.0.0.1", "tokens_per_s": round(dp["tokens_per_s"]),
                  "seconds": round(dp["seconds"], 2),
                  "allreduce_ms_per_step": round(1000 * dp.get("allreduce_seconds", 0) / steps, 2)},
    "speedup": round(dp["tokens_per_s"] / one["tokens_per_s"], 3),
}, indent=1))
PY
