#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian's slurm-wlm and munge; controller and node on
# localhost, in a temporary folder, stopped afterwards) runs a 12-budget frontier sweep of the
# embedded model as a job array of 3 shards plus the merge, and checks the merged file against an
# unsharded run: the same keys in the same order, the same accuracies. Installs the two packages
# when they are missing (root or sudo). Run by .ci/run; exit status 0 = passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLI=$(pwd)/${CLI:-build/app/nestscope-cli}
[ -x "$CLI" ] || { echo "slurm-test: build first ($CLI is missing)" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "slurm-test: installing ${need[*]}"
  $SUDO apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

T=$(mktemp -d /tmp/nestscope-slurm.XXXXXX)
chmod 755 "$T"
host=$(hostname -s)
pids=()
cleanup() {
  for p in "${pids[@]}"; do $SUDO kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do $SUDO kill -9 "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT

# munge: the key the package made, our own socket so a running munged is left alone.
mkdir -p "$T/munge"
$SUDO chown munge:munge "$T/munge" 2>/dev/null || true
as_munge() { if [ "$(id -u)" -eq 0 ]; then runuser -u munge -- "$@"; else sudo -u munge "$@"; fi; }
as_munge /usr/sbin/munged --socket="$T/munge/socket" --pid-file="$T/munge/pid" \
  --log-file="$T/munge/log" --seed-file="$T/munge/seed" --force
pids+=("$(cat "$T/munge/pid")")

port=$((17000 + RANDOM % 2000))
cat > "$T/slurm.conf" <<CONF
ClusterName=nestscope
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge/socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$T/state" "$T/spool"
export SLURM_CONF="$T/slurm.conf"
$SUDO env SLURM_CONF="$SLURM_CONF" /usr/sbin/slurmctld -i
$SUDO env SLURM_CONF="$SLURM_CONF" /usr/sbin/slurmd
for _ in $(seq 60); do
  [ -s "$T/slurmctld.pid" ] && [ -s "$T/slurmd.pid" ] && sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 1
done
[ -s "$T/slurmctld.pid" ] && pids+=("$(cat "$T/slurmctld.pid")")
[ -s "$T/slurmd.pid" ] && pids+=("$(cat "$T/slurmd.pid")")
sinfo -h -o %t | grep -q idle || { echo "slurm-test: the node did not come up" >&2; tail -20 "$T"/slurm*.log >&2; exit 1; }
echo "slurm-test: controller and node up on $host (port $port)"

# 12 budgets of the embedded model, scored on 2 sampled continuations (nothing to download).
python3 - "$T/budgets.json" <<'PY'
import json, sys
b = [{"method": "dense", "label": "dense", "budget": {}}]
b += [{"method": "svd", "label": f"r={r}", "budget": {"rank": r, "kind": {"attn": "nsn", "mlp": "nsn"}}} for r in (8, 16, 32, 48, 64, 96)]
b += [{"method": "tt-svd", "label": f"χ={c}", "budget": {"bond": c, "kind": {"attn": "mpo", "mlp": "mpo"}}} for c in (4, 8, 16)]
b += [{"method": "gate", "label": f"sensing {a}", "budget": {"gate": {"policy": "sensing", "active": a}}} for a in (0.25, 0.5)]
json.dump(b, open(sys.argv[1], "w"))
PY
ARGS=(--budgets "$T/budgets.json" --continuations 2 --no-latency)
export NESTSCOPE_CACHE_DIR="$T/cache"
start=$(date +%s)
scripts/slurm/submit-frontier.sh 3 "$T/out" "${ARGS[@]}"
for _ in $(seq 900); do
  [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
  sleep 1
done
[ -z "$(squeue -h -o %i)" ] || { echo "slurm-test: jobs still queued after 15 min" >&2; squeue >&2; exit 1; }
echo "slurm-test: array and merge finished in $(($(date +%s) - start)) s"
[ -s "$T/out/frontier.jsonl" ] || { echo "slurm-test: no merged file" >&2; cat "$T"/out/*.log >&2; exit 1; }
tail -n +1 "$T"/out/merge.log | sed 's/^/  /'
"$CLI" frontier "${ARGS[@]}" -o "$T/whole.jsonl" --json > /dev/null 2>&1
python3 - "$T/out/frontier.jsonl" "$T/whole.jsonl" <<'PY'
import json, sys
merged = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
whole = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert len(whole) == 12 and len(merged) == 12, (len(merged), len(whole))
for m, w in zip(merged, whole):
    assert m["key"] == w["key"], (m["label"], w["label"])
    for k in ("token_accuracy", "top1_agreement", "kl", "macs"):
        assert m[k] == w[k], (m["label"], k, m[k], w[k])
print("slurm-test: passed — the merged 3-shard file equals the unsharded run (12 rows: keys, accuracies, MACs)")
PY
