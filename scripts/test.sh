#!/usr/bin/env bash
# The README's test command: install, build, run the whole suite (ctest prints the closing line).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/build.sh "$@"
export QT_QPA_PLATFORM=offscreen
ctest --test-dir build --output-on-failure
echo "scripts/test.sh: build + tests took $(( $(date +%s) - start )) s"
