#!/usr/bin/env bash
# tests/nfs/selftest-payload.sh — checks that the NFS mount made by uml-run.sh behaves
# like the network filesystem the spool must survive on (SPEC §6), independent of
# telespool itself:
#   1. 4 concurrent writers (separate sqlite3 processes, rollback journal, busy timeout)
#      insert NFS_SELFTEST_ROWS rows each into one database on the mount: every insert
#      succeeds, the count is exact and PRAGMA integrity_check is "ok";
#   2. flock(2) on a file there is exclusive across processes: `flock -n` fails while
#      another process holds the lock and succeeds after it lets go;
#   3. the same for fcntl/POSIX locks (what SQLite itself uses).
# Runs INSIDE the guest: tests/nfs/uml-run.sh <3|4.2> tests/nfs/selftest-payload.sh
set -euo pipefail
ME="selftest-payload.sh"
say() { echo "$ME: $*"; }
die() { echo "$ME: FAIL: $*"; exit 1; }

: "${NFS_DIR:?run me through tests/nfs/uml-run.sh}"
: "${RESULTS_DIR:?run me through tests/nfs/uml-run.sh}"
ROWS="${NFS_SELFTEST_ROWS:-200}"
[[ "$(stat -f -c %T "$NFS_DIR")" == nfs ]] || die "$NFS_DIR is not NFS"
say "mount: $(grep " $NFS_DIR " /proc/mounts)"
command -v sqlite3 >/dev/null || die "sqlite3 not installed on the host"
command -v flock >/dev/null || die "flock not installed on the host"

d="$NFS_DIR/selftest.$$"
mkdir -p "$d"

# --- 1. concurrent sqlite3 writers -------------------------------------------------
db="$d/t.db"
sqlite3 "$db" 'PRAGMA journal_mode=DELETE; CREATE TABLE t(w INTEGER, i INTEGER);' >/dev/null
t0=$SECONDS
for w in 1 2 3 4; do
    (
        fails=0
        for i in $(seq 1 "$ROWS"); do
            sqlite3 -cmd '.timeout 30000' "$db" "INSERT INTO t VALUES($w,$i);" || fails=$((fails + 1))
        done
        echo "$fails" >"$d/fails.$w"
    ) &
done
wait
fails=$(awk '{s+=$1} END {print s+0}' "$d"/fails.*)
count=$(sqlite3 "$db" 'SELECT count(*) FROM t;')
distinct=$(sqlite3 "$db" 'SELECT count(*) FROM (SELECT DISTINCT w, i FROM t);')
integ=$(sqlite3 "$db" 'PRAGMA integrity_check;')
say "sqlite: 4x$ROWS inserts in $((SECONDS - t0))s: count=$count distinct=$distinct failures=$fails integrity=$integ"
[[ "$fails" == 0 ]] || die "$fails inserts failed"
[[ "$count" == $((4 * ROWS)) && "$distinct" == $((4 * ROWS)) ]] || die "expected $((4 * ROWS)) rows"
[[ "$integ" == ok ]] || die "integrity_check: $integ"

# --- 2. flock across processes ----------------------------------------------------
lk="$d/lock"
: >"$lk"
rm -f "$d/held"
flock "$lk" -c "touch '$d/held'; sleep 6" &
holder=$!
for _ in $(seq 1 100); do [[ -e "$d/held" ]] && break; sleep 0.1; done
[[ -e "$d/held" ]] || die "flock holder never got the lock"
if flock -n "$lk" -c true; then die "flock -n succeeded while another process held the lock"; fi
say "flock: -n refused while held (ok)"
wait "$holder"
flock -n "$lk" -c true || die "flock -n failed after the holder released the lock"
say "flock: -n granted after release (ok)"

# --- 3. fcntl (POSIX) locks across processes ----------------------------------------
python3 - "$d/plock" <<'PY'
import fcntl, os, subprocess, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX)
probe = ("import fcntl,os,sys\n"
         "fd=os.open(sys.argv[1],os.O_RDWR)\n"
         "try:\n fcntl.lockf(fd,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError as e:\n sys.exit(3)\n"
         "sys.exit(0)\n")
r = subprocess.run([sys.executable, "-c", probe, path]).returncode
if r != 3:
    sys.exit(f"selftest-payload.sh: FAIL: fcntl lock not exclusive across processes (probe rc={r})")
fcntl.lockf(fd, fcntl.LOCK_UN)
r = subprocess.run([sys.executable, "-c", probe, path]).returncode
if r != 0:
    sys.exit(f"selftest-payload.sh: FAIL: fcntl lock not granted after unlock (probe rc={r})")
print("selftest-payload.sh: fcntl: LOCK_NB refused while held, granted after unlock (ok)")
PY

rm -rf "$d"
echo "vers=${NFS_VERS:-?} rows=$((4 * ROWS)) ok" >"$RESULTS_DIR/selftest.ok"
say "all NFS self-tests passed (NFSv${NFS_VERS:-?})"
