#!/usr/bin/env bash
# Installs the dependencies and builds NestScope (Release, Ninja) into ./build.
# Extra arguments go to CMake's configure step, e.g. -DNESTSCOPE_GUI=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build
