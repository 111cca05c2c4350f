#!/usr/bin/env bash
# tests/nfs/telespool.sh — telespool's spool on a REAL kernel NFS mount (SPEC §6, issue 5
# item 6): concurrent writers and an uploader share one spool there, and
#   1. nothing is lost: every recorded event is delivered to the collector (or queued);
#   2. the database is whole: PRAGMA integrity_check is "ok";
#   3. the lock is really enforced: while another process holds spool.lock, `record`
#      waits, then succeeds once it is released;
#   4. telespool detected the filesystem (statfs magic 0x6969) and chose a rollback
#      journal, never WAL.
# Runs INSIDE the user-mode-Linux guest: tests/nfs/run.sh (or tests/nfs/uml-run.sh
# <3|4.2> tests/nfs/telespool.sh) with TELESPOOL_BIN set to an absolute path. Sized for
# the guest, where starting a process takes ~60 ms.
set -euo pipefail
ME="nfs/telespool.sh"
say() { echo "$ME: $*"; }
die() { echo "$ME: FAIL: $*"; exit 1; }

: "${NFS_DIR:?run me through tests/nfs/uml-run.sh}"
: "${RESULTS_DIR:?run me through tests/nfs/uml-run.sh}"
: "${TELESPOOL_BIN:?set TELESPOOL_BIN to an absolute path}"
WRITERS="${NFS_WRITERS:-4}"
EACH="${NFS_EVENTS_EACH:-25}"
[[ "$(stat -f -c %T "$NFS_DIR")" == nfs ]] || die "$NFS_DIR is not NFS"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

work="$RESULTS_DIR/work"
mkdir -p "$work/config" "$work/bodies"
export XDG_CONFIG_HOME="$work/config"
export TELESPOOL_DIR="$NFS_DIR/spool"
unset NEMO_EVALUATOR_TELEMETRY_LEVEL NEMO_EVALUATOR_TELEMETRY_ENDPOINT TELESPOOL_CONFIG
T="$TELESPOOL_BIN"

python3 "$here/../e2e/collector.py" --dir "$work/bodies" --port-file "$work/port" &
collector=$!
trap 'kill "$collector" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
[[ -s "$work/port" ]] || die "the collector did not start"
endpoint="http://127.0.0.1:$(cat "$work/port")/v1.1/events/json"

# --- 1. concurrent writers, and an uploader running beside them ---------------------
t0=$SECONDS
for w in $(seq 1 "$WRITERS"); do
    (
        fails=0
        for i in $(seq 1 "$EACH"); do
            "$T" record evaluation-task --task "w$w-$i" --framework f --model m \
                --status success 2>>"$work/stderr.$w" || fails=$((fails + 1))
            # A WAL would need memory shared between hosts: it must never appear here.
            if [[ -e "$TELESPOOL_DIR/spool.db-wal" ]]; then touch "$work/wal-seen"; fi
        done
        echo "$fails" >"$work/fails.$w"
    ) &
done
(
    # One writer of a batch through stdin: all or nothing, in one transaction.
    for i in $(seq 1 50); do
        printf '{"name":"LauncherJobEvent","parameters":{"executorType":"slurm","deploymentType":"none","model":"m","status":"started","tasks":["b-%s"]}}\n' "$i"
    done | "$T" record --json - 2>>"$work/stderr.batch" || echo 1 >"$work/fails.batch"
) &
uploads=0
upload_fails=0
while [[ $(ls "$work"/fails.* 2>/dev/null | wc -l) -lt "$WRITERS" ]]; do
    "$T" upload --now --quiet --endpoint "$endpoint" 2>>"$work/stderr.upload" ||
        upload_fails=$((upload_fails + 1))
    uploads=$((uploads + 1))
    sleep 0.5
done
wait_for_jobs() { local j; for j in $(jobs -p); do [[ $j == "$collector" ]] || wait "$j" || true; done; }
wait_for_jobs
fails=$(cat "$work"/fails.* 2>/dev/null | awk '{s+=$1} END {print s+0}')
say "$WRITERS writers x $EACH records + 50 by stdin in $((SECONDS - t0))s with $uploads uploads alongside: $fails failed"
[[ "$fails" == 0 ]] || { cat "$work"/stderr.* >&2 || true; die "$fails records failed"; }
if grep -qi "database is locked" "$work"/stderr.* 2>/dev/null; then die "a \"database is locked\" reached a user"; fi
[[ "$upload_fails" == 0 ]] || die "$upload_fails uploads beside the writers failed: $(head -3 "$work/stderr.upload")"
[[ ! -e "$work/wal-seen" ]] || die "a spool.db-wal file appeared on NFS while writers ran"

# --- 3. the lock is enforced over NFS ----------------------------------------------
rm -f "$work/held"
flock "$TELESPOOL_DIR/spool.lock" -c "touch '$work/held'; sleep 5" &
holder=$!
for _ in $(seq 1 100); do [[ -e "$work/held" ]] && break; sleep 0.1; done
[[ -e "$work/held" ]] || die "could not take spool.lock for the lock test"
t1=$SECONDS
"$T" record evaluation-task --task locked-1 --framework f --model m --status success ||
    die "record failed while waiting for the lock"
waited=$((SECONDS - t1))
wait "$holder"
say "a record waited ${waited}s for a lock held by another process, then succeeded"
[[ $waited -ge 3 ]] || die "record did not wait for the held lock (${waited}s)"

# --- 4. the filesystem was detected: rollback journal, never WAL --------------------
mode=$(sqlite3 "$TELESPOOL_DIR/spool.db" 'PRAGMA journal_mode;')
say "journal mode on NFS: $mode; inspect says: $("$T" inspect | grep '^spool')"
[[ "$mode" == delete ]] || die "journal mode is $mode, not delete"
[[ ! -e "$TELESPOOL_DIR/spool.db-wal" ]] || die "a WAL file exists on NFS"
"$T" inspect | grep -q "network filesystem: nfs" || die "inspect does not report NFS"

# --- 1 and 2. drain, then count what arrived ----------------------------------------
for _ in $(seq 1 20); do
    "$T" upload --now --quiet --endpoint "$endpoint" || true
    queued=$("$T" inspect --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["queued"])')
    [[ "$queued" == 0 ]] && break
    sleep 1
done
[[ "$queued" == 0 ]] || die "$queued events still queued after the final uploads"
integ=$(sqlite3 "$TELESPOOL_DIR/spool.db" 'PRAGMA integrity_check;')
[[ "$integ" == ok ]] || die "integrity_check: $integ"
python3 - "$work/bodies" "$WRITERS" "$EACH" <<'PY'
import glob, json, sys
bodies, writers, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = []
for path in sorted(glob.glob(f"{bodies}/*.json")):
    if path.endswith(".meta.json"):
        continue
    for e in json.load(open(path))["events"]:
        p = e["parameters"]
        seen.append(p["task"] if "task" in p else p["tasks"][0])
expected = {f"w{w}-{i}" for w in range(1, writers + 1) for i in range(1, each + 1)}
expected |= {f"b-{i}" for i in range(1, 51)} | {"locked-1"}
missing, extra = expected - set(seen), set(seen) - expected
dupes = len(seen) - len(set(seen))
print(f"nfs/telespool.sh: delivered {len(seen)} events ({len(set(seen))} distinct, {dupes} duplicates) of {len(expected)} recorded")
if missing or extra or dupes:
    # Nothing is killed here, so every event must arrive exactly once.
    sys.exit(f"nfs/telespool.sh: FAIL: missing {sorted(missing)[:10]} extra {sorted(extra)[:10]} "
             f"duplicates {dupes}")
PY
echo "vers=${NFS_VERS:-?} ok" >"$RESULTS_DIR/telespool.ok"
say "telespool on NFSv${NFS_VERS:-?}: nothing lost, integrity ok, lock enforced, journal $mode"
