#!/usr/bin/env bash
# Fuzzes NestScope's parsers with libFuzzer (clang, AddressSanitizer + UBSan): builds tests/fuzz
# into build-fuzz, writes seed corpora with the project's own writers, runs every target for
# RUNS executions (default 1,000,000; or FUZZ_SECONDS each) and prints a JSON summary.
# Findings (crash-*, oom-*, leak-*, timeout-*) are kept in build-fuzz/findings.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1000000}
JOBS=${JOBS:-2}
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is needed (apt-get install clang)"; exit 1; }
cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-fuzz
rm -rf build-fuzz/seeds && build-fuzz/fuzz_seeds build-fuzz/seeds >/dev/null
mkdir -p build-fuzz/findings build-fuzz/logs
targets=(safetensors hf_config tokenizer_json bpe budget_json)
limit=(-runs="$RUNS")
[ -n "${FUZZ_SECONDS:-}" ] && limit=(-max_total_time="$FUZZ_SECONDS")
run_one() {
  local t=$1
  mkdir -p "build-fuzz/corpus/$t"
  # -rss_limit_mb / -malloc_limit_mb: a header claiming a huge tensor must be refused, not allocated.
  build-fuzz/fuzz_$t "build-fuzz/corpus/$t" "build-fuzz/seeds/$t" "${limit[@]}" -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t-" \
    >"build-fuzz/logs/$t.log" 2>&1 || true
}
start=$(date +%s)
for t in "${targets[@]}"; do
  run_one "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
done
wait
echo "{"
first=1
for t in "${targets[@]}"; do
  execs=$(grep -oP 'stat::number_of_executed_units: \K[0-9]+' "build-fuzz/logs/$t.log" || echo 0)
  secs=$(grep -oP 'Done [0-9]+ runs in \K[0-9]+' "build-fuzz/logs/$t.log" || echo "?")
  findings=$(find build-fuzz/findings -name "$t-*" | wc -l)
  [ $first -eq 1 ] || echo ","
  first=0
  printf '  "%s": {"executions": %s, "seconds": "%s", "findings": %s, "corpus": %s}' "$t" "$execs" "$secs" "$findings" \
    "$(ls "build-fuzz/corpus/$t" | wc -l)"
done
echo
echo "}"
echo "fuzz.sh: $(( $(date +%s) - start )) s; findings in build-fuzz/findings, logs in build-fuzz/logs" >&2
