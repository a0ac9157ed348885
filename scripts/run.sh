#!/usr/bin/env bash
# The README's run command: install, build, open the GUI on the embedded default model.
# Arguments go to the app, e.g. scripts/run.sh --model my.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ "${QT_QPA_PLATFORM:-}" != offscreen ]; then
  echo "run.sh: no display found; running under a virtual X server (xvfb-run)" >&2
  exec xvfb-run -a ./build/app/nestscope "$@"
fi
exec ./build/app/nestscope "$@"
