#!/usr/bin/env bash
# Submits a frontier sweep as a Slurm job array of N shards and a merge that runs after all of
# them succeed. Prints the two job ids; the merged rows land in OUT/frontier.jsonl.
# Usage: scripts/slurm/submit-frontier.sh N OUT [frontier options: -m MODEL --budgets F …]
# Extra sbatch options (partition, time, account) go in SBATCH_* variables or SBATCH_ARGS.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 N OUT [frontier options]" >&2; exit 2; }
N=$1
OUT=$2
shift 2
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "submit-frontier: N must be a positive whole number, got '$N'" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
CLI=${NESTSCOPE_CLI:-$(command -v nestscope-cli || echo "$here/../../build/app/nestscope-cli")}
[ -x "$CLI" ] || { echo "submit-frontier: no nestscope-cli at $CLI (set NESTSCOPE_CLI)" >&2; exit 1; }
mkdir -p "$OUT"
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_ARGS:-} --array="0-$((N - 1))" --output="$OUT/shard-%a.log" \
  --export=ALL,NESTSCOPE_CLI="$CLI" "$here/frontier.sbatch" "$OUT" "$@")
array=${array%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency="afterok:$array" --output="$OUT/merge.log" \
  --export=ALL,NESTSCOPE_CLI="$CLI",NESTSCOPE_SHARDS="$N" "$here/frontier.sbatch" "$OUT")
merge=${merge%%;*}
echo "array job $array ($N shards), merge job $merge: $OUT/frontier.jsonl"
