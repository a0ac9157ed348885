#!/usr/bin/env bash
# The explorer as a person demos it: the real binary under Xvfb at 1366×768, driven by xdotool
# (mouse drags, clicks, keys) through a fixed demo on PicoGPT and on the demo model (stories260K):
# generate, drag rank, drag χ, gate 50%, play budget, sweep, ablate a head, export PNG.
# Saves a screenshot per step under $OUT (default build/demo-check) and fails on any modal
# window, any message in the error bar, or any panel cut off by the screen.
#   usage: scripts/demo-check.sh [build-dir]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
BIN="$BUILD/app/nestscope"
OUT="${OUT:-$BUILD/demo-check}"
W=1366 H=768
for tool in Xvfb xdotool import python3; do
  command -v "$tool" >/dev/null || { echo "demo-check: $tool is missing (scripts/install-deps.sh installs it)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "demo-check: no $BIN (build first)" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
WORK="$(mktemp -d)"
export XDG_CACHE_HOME="$WORK/cache" XDG_CONFIG_HOME="$WORK/config"  # a fresh user: nothing cached or saved
DISPLAY_NUM=:$(( 90 + RANDOM % 100 ))
Xvfb "$DISPLAY_NUM" -screen 0 ${W}x${H}x24 >/dev/null 2>&1 &
XVFB=$!
export DISPLAY=$DISPLAY_NUM
APP=""
cleanup() { [ -n "$APP" ] && kill "$APP" 2>/dev/null; kill "$XVFB" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
sleep 1
MAP="$WORK/ui.json"
step=0
fail() { echo "demo-check: FAIL at step $step ($1): $2" >&2; import -window root "$OUT/failed.png" || true; exit 1; }
ui() { python3 -c "import json,sys; d=json.load(open('$MAP')); print(eval(sys.argv[1]))" "$1"; }
wait_ui() {  # wait_ui "<python expression over d>" seconds
  local t=0
  until [ -f "$MAP" ] && [ "$(ui "$1" 2>/dev/null)" = "True" ]; do
    sleep 0.5; t=$((t + 1)); [ $t -le $(( $2 * 2 )) ] || fail "$CUR" "timed out waiting for: $1"
  done
}
check() {  # no modal window, no error, every panel whole on the screen; then a screenshot
  local name="$1"
  step=$((step + 1))
  local windows
  windows=$(xdotool search --onlyvisible --class nestscope 2>/dev/null | while read -r id; do
              eval "$(xdotool getwindowgeometry --shell "$id")"; [ "$WIDTH" -gt 40 ] && echo "$id"; done | wc -l)
  [ "$windows" -le 1 ] || fail "$name" "$windows windows are open (a dialog or message box)"
  local msg; msg=$(ui "d['message']")
  [ -z "$msg" ] || fail "$name" "error message: $msg"
  local cut; cut=$(python3 - "$MAP" $W $H <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); W, H = int(sys.argv[2]), int(sys.argv[3])
for name, (x, y, w, h) in d["panels"].items():
    if w < 120 or h < 100 or x < 0 or y < 0 or x + w > W or y + h > H:
        print(f"{name} at {x},{y} {w}x{h}")
PY
)
  [ -z "$cut" ] || fail "$name" "panel cut off or squashed: $cut"
  import -window root "$OUT/$(printf %02d $step)-$name.png"
  echo "demo-check: step $step $name ok"
}
centre() { python3 -c "import json; r=json.load(open('$MAP'))['controls']['$1']; print(r[0]+r[2]//2, r[1]+r[3]//2)"; }
drag() {  # drag <slider> <fraction of its track>
  read -r x y < <(python3 -c "import json; r=json.load(open('$MAP'))['controls']['$1']; print(r[0]+r[2]-8, r[1]+r[3]//2)")
  local tx; tx=$(python3 -c "import json; r=json.load(open('$MAP'))['controls']['$1']; print(int(r[0]+8+$2*(r[2]-16)))")
  xdotool mousemove "$x" "$y" mousedown 1
  for i in 1 2 3 4 5 6; do xdotool mousemove $(( x + (tx - x) * i / 6 )) "$y"; sleep 0.05; done
  xdotool mouseup 1
}
click() { read -r x y < <(centre "$1"); xdotool mousemove "$x" "$y" click 1; }
# Keys go to the window with the X focus; with no window manager it does not come back by itself
# after a dialog closes.
key() { local id; id=$(xdotool search --onlyvisible --class nestscope | tail -1); xdotool windowfocus --sync "$id" key "$@"; }
generated() { wait_ui "d['ready'] and not d['busy'] and d['tokens'] > 0" "${1:-120}"; }

demo() {  # demo <label> <how to open the model: "" or a key sequence>
  local label="$1"
  CUR="$label open"; generated 180; check "$label-open"
  CUR="$label generate"; key ctrl+Return; sleep 0.5; generated; check "$label-generate"
  CUR="$label rank"; local before; before=$(ui "d['budget_json']")
  drag rank 0.2; sleep 0.5; generated
  [ "$(ui "d['budget_json']")" != "$before" ] || fail "$CUR" "the budget did not change"
  check "$label-rank"
  CUR="$label chi"; drag bond 0.3; sleep 0.5; generated; check "$label-chi"
  CUR="$label gate"; drag gate 0.47; sleep 0.5; generated
  [ "$(ui "'gate' in d['budget_json']")" = "True" ] || fail "$CUR" "the gate did not turn on"
  check "$label-gate50"
  CUR="$label play"; click play; sleep 3; check "$label-play"; click play; sleep 0.5; generated
  CUR="$label sweep"; click sweep; sleep 1; wait_ui "not d['sweeping'] and d['rows'] > 5" 600; check "$label-sweep"
  CUR="$label ablate"; generated
  read -r hx hy < <(python3 -c "import json; print(*json.load(open('$MAP'))['controls']['head_L0_0'])")
  xdotool mousemove "$hx" "$hy" click 1
  wait_ui "d['compare'] != ''" 120; check "$label-ablate"
  CUR="$label export"  # a click on the chart gives it the focus: the export takes the focused panel
  read -r fx fy < <(python3 -c "import json; r=json.load(open('$MAP'))['panels']['frontier']; print(r[0]+r[2]//2, r[1]+r[3]//2)")
  xdotool mousemove "$fx" "$fy" click 1; sleep 0.3
  key ctrl+shift+e; sleep 1.5
  xdotool key ctrl+a; xdotool type --delay 5 "$OUT/$label-frontier.png"; xdotool key Return; sleep 1.5
  [ -s "$OUT/$label-frontier.png" ] || fail "$CUR" "no exported PNG"
  check "$label-export"
}

"$BIN" --ui-map "$MAP" -n 60 >"$WORK/app.log" 2>&1 &
APP=$!
demo picogpt
CUR="open demo model"; key ctrl+shift+d; sleep 1  # File > Open demo model
wait_ui "'stories260K' in d['model'] and d['ready']" 120
demo stories260K
kill "$APP"; APP=""
echo "demo-check: all $step steps passed; screenshots in $OUT"
