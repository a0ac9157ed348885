#!/usr/bin/env bash
# Installs everything NestScope needs to build, test and run on Debian bookworm. Idempotent.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-pthread libblas-dev
  qt6-base-dev qt6-charts-dev qt6-svg-dev libqt6opengl6-dev libgl-dev
  libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev libgloo-dev
  xvfb xauth fonts-dejavu-core python3-torch
  xdotool imagemagick
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
