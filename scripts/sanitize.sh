#!/usr/bin/env bash
# The sanitizer build: NestScope's code with AddressSanitizer + UndefinedBehaviorSanitizer (the
# core, CLI and core tests; -DNESTSCOPE_GUI=OFF keeps Qt's own allocations out of the report),
# then the suite. Extra arguments go to CMake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/install-deps.sh
npm_modules=()  # the GPT-2 tokenizer reference, where scripts/test.sh installed it
[ -d build/npm/node_modules ] && npm_modules=(-DNESTSCOPE_NPM_MODULES="$PWD/build/npm/node_modules")
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNESTSCOPE_SANITIZE=address,undefined \
  -DNESTSCOPE_GUI=OFF -DNESTSCOPE_BENCH=OFF -DNESTSCOPE_CUDA_KERNELS=OFF "${npm_modules[@]}" "$@"
cmake --build build-asan
# LibTorch (not instrumented) keeps process-lifetime allocations that LeakSanitizer would list.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The three tests that score the whole reference corpus (minutes each under the sanitizers) ran in
# the release build (scripts/test.sh); their code paths run here in the smaller tests.
corpus_scale='^Engine\.(DefaultModelScores|ShippedChi8Mpo|ShippedGate50Model)'
ctest --test-dir build-asan --output-on-failure -E "$corpus_scale"
echo "scripts/sanitize.sh: build + tests took $(( $(date +%s) - start )) s"
