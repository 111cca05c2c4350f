#!/usr/bin/env bash
# tests/e2e/slurm.sh — telespool end to end on a real (one-node, Debian) Slurm cluster.
#
# 1. Shared spool: `telespool config set telemetry.level 1`, then an sbatch job array
#    (tests/e2e/eval-job.sh) whose tasks record like evaluation jobs into one spool in the
#    test's own HOME (standing in for a shared home); then, as cron on a login node would,
#    `telespool upload --quiet --now` to a loopback collector (tests/e2e/collector.py), twice.
# 2. Air-gapped: the same job script with a node-local spool per job and a final
#    `telespool export`; then `telespool upload --from FILE` of each file into a fresh spool,
#    and once more (which must send nothing).
# 3. Cron while jobs run: the job array again into the shared spool while two cron-style
#    upload loops run back to back and overlap; then one last upload.
# Checks (tests/e2e/check_bodies.py): every event arrives exactly once; one session per
# job, different ones for different jobs; no job id, user, host or path in any body; every
# model redacted; and, with telespool itself: every command in every job exited 0, the
# jobs inherited the test's environment, level 1 kept model names off the disk, and the
# spools end empty.
#
# Usage: tests/e2e/slurm.sh
# Environment (optional):
#   TELESPOOL_BIN      telespool binary (default target/debug/telespool, built with
#                      `cargo build` if missing)
#   E2E_JOBS           array size (default 8)
#   E2E_JOB_TIMEOUT    seconds to wait for each job array (default 180)
#   E2E_TIMEOUT        seconds all the job waits together may take, counted from when the
#                      cluster is up (default 240); every telespool call has its own timeout
#   E2E_KEEP=1         keep the work directory even on success (always kept on failure)
# Starts the cluster with .ci/lib/slurm.sh if it is not up, and then stops it at exit;
# a cluster that was already up is left running. Needs root (Slurm jobs run as root).
set -euo pipefail
shopt -s inherit_errexit
ME="slurm.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E_DIR="$REPO_ROOT/tests/e2e"
N="${E2E_JOBS:-8}"
JOB_TIMEOUT="${E2E_JOB_TIMEOUT:-180}"
DEADLINE=""  # set once the cluster is up
T_START=$SECONDS

log() { echo "$ME: $*" >&2; }
now_ts() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

RESULTS=()
FAILS=0
pass() { RESULTS+=("PASS  $*"); log "PASS: $*"; }
fail() { RESULTS+=("FAIL  $*"); FAILS=$((FAILS + 1)); log "FAIL: $*"; }
check() { # check DESCRIPTION CMD...: PASS if CMD succeeds
    local d="$1"
    shift
    if "$@"; then pass "$d"; else fail "$d"; fi
}

# finish: print the summary, exit 0 if every check passed, else 1.
T_CLUSTER=- T_JOBS1=- T_UPLOAD1=- T_JOBS2=- T_UPLOAD2=- T_JOBS3=-
FINISHED=0
finish() {
    FINISHED=1
    echo
    echo "==== telespool e2e on Slurm ($N-task arrays, cluster telespoolci) ===="
    printf '%s\n' "${RESULTS[@]}"
    echo "timings (s): cluster start $T_CLUSTER, phase-1 jobs $T_JOBS1, cron upload $T_UPLOAD1," \
        "phase-2 jobs $T_JOBS2, upload --from $T_UPLOAD2, phase-3 jobs with cron racing $T_JOBS3," \
        "total $((SECONDS - T_START))"
    if ((FAILS)); then
        echo "RESULT: FAIL ($FAILS of ${#RESULTS[@]} checks failed; work directory $W kept)"
        exit 1
    fi
    echo "RESULT: PASS (${#RESULTS[@]} checks)"
    exit 0
}

# The collector and the checks are stdlib-only Python 3 (Debian's python3 package).
if ! command -v python3 >/dev/null 2>&1; then
    # shellcheck source=.ci/lib/apt.sh
    source "$REPO_ROOT/.ci/lib/apt.sh"
    CI_LOG_TAG="$ME" ci_apt_ensure python3
fi

# ---------------------------------------------------------------- binary
BIN="${TELESPOOL_BIN:-}"
if [[ -z "$BIN" ]]; then
    BIN="$REPO_ROOT/target/debug/telespool"
    if [[ ! -x "$BIN" ]]; then
        log "building $BIN (cargo build)"
        (cd "$REPO_ROOT" && cargo build --quiet)
    fi
fi
[[ -x "$BIN" ]] || { log "ERROR: telespool binary '$BIN' not found or not executable"; exit 1; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
export TELESPOOL_BIN="$BIN"
# Nothing of the caller's telemetry environment may leak into the test (a session id set
# here would put every job in one session).
for v in ${!NEMO_EVALUATOR_TELEMETRY_@} ${!TELESPOOL_@} XDG_DATA_HOME; do
    [[ "$v" == TELESPOOL_BIN ]] || unset "$v"
done

# ---------------------------------------------------------------- cleanup
STARTED_CLUSTER=0
COLLECTOR_PID=""
RACE_PIDS=()
JOBIDS=()
W=""
LOCAL_ROOT=""
ORIG_HOME="$HOME"
cleanup() {
    local rc=$?
    set +e
    trap - ERR
    if ((!FINISHED)); then
        echo
        echo "==== telespool e2e on Slurm: aborted ===="
        printf '%s\n' "${RESULTS[@]}"
        echo "RESULT: FAIL (aborted with exit $rc before all checks ran; see the messages above)"
        ((rc != 0)) || rc=1
    fi
    if [[ -n "$COLLECTOR_PID" ]] && kill -0 "$COLLECTOR_PID" 2>/dev/null; then
        kill -TERM "$COLLECTOR_PID" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$COLLECTOR_PID" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$COLLECTOR_PID" 2>/dev/null
        wait "$COLLECTOR_PID" 2>/dev/null
    fi
    local j
    [[ -n "$W" ]] && touch "$W/jobs3.finished" 2>/dev/null
    for j in "${RACE_PIDS[@]}"; do
        kill -TERM "$j" 2>/dev/null
        wait "$j" 2>/dev/null
    done
    local cancelled=()
    for j in "${JOBIDS[@]}"; do
        if [[ -n "$(squeue -h -j "$j" 2>/dev/null)" ]]; then
            log "cancelling job $j"
            scancel "$j" 2>/dev/null
            cancelled+=("$j")
        fi
    done
    # Let cancelled jobs end (bounded) before we go, or before the daemons do.
    for j in "${cancelled[@]}"; do
        for _ in $(seq 1 30); do [[ -z "$(squeue -h -j "$j" 2>/dev/null)" ]] && break; sleep 0.5; done
    done
    ((STARTED_CLUSTER)) && bash "$REPO_ROOT/.ci/lib/slurm.sh" stop
    [[ -n "$LOCAL_ROOT" ]] && rm -rf "$LOCAL_ROOT"
    if [[ -n "$W" ]]; then
        if ((rc == 0)) && [[ "${E2E_KEEP:-0}" != 1 ]]; then
            rm -rf "$W"
        else
            log "work directory kept: $W"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "ERROR: exit $? at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- cluster
T0=$SECONDS
if bash "$REPO_ROOT/.ci/lib/slurm.sh" status >/dev/null 2>&1; then
    log "Slurm cluster already up; leaving it running afterwards"
else
    STARTED_CLUSTER=1
    bash "$REPO_ROOT/.ci/lib/slurm.sh" start
fi
T_CLUSTER=$((SECONDS - T0))
DEADLINE=$((SECONDS + ${E2E_TIMEOUT:-240}))

# ---------------------------------------------------------------- work dir, environment
W="$(mktemp -d /var/tmp/telespool-e2e.XXXXXX)"
LOCAL_ROOT="$(mktemp -d /tmp/telespool-e2e-node.XXXXXX)" # node-local disk of the "compute node"
mkdir -p "$W/home" "$W/jobs1" "$W/jobs2/exports" "$W/bodies" "$W/phase1" "$W/phase2" "$W/phase2-again"
export HOME="$W/home"
export XDG_CONFIG_HOME="$HOME/.config"
# The default spool location, spelled out: the cron-like upload below finds it without.
export TELESPOOL_DIR="$HOME/.local/share/telespool"
export E2E_LOCAL_ROOT="$LOCAL_ROOT"
ARCH="$(uname -m)"
# Paths that must not appear in any body (the jobs add theirs: home, spool, cwd, ...).
FORBID=(--forbid "$W" --forbid "$LOCAL_ROOT" --forbid "$REPO_ROOT" --forbid "$BIN")
[[ "$ORIG_HOME" != / ]] && FORBID+=(--forbid "$ORIG_HOME")
log "work dir $W, node-local dir $LOCAL_ROOT, binary $BIN, $N jobs per array"

ts() { timeout 60 "$BIN" "$@"; } # every telespool call bounded

# ---------------------------------------------------------------- collector
python3 "$E2E_DIR/collector.py" --dir "$W/bodies" --port-file "$W/collector.port" \
    2>"$W/collector.err" &
COLLECTOR_PID=$!
for _ in $(seq 1 50); do [[ -s "$W/collector.port" ]] && break; sleep 0.1; done
[[ -s "$W/collector.port" ]] || { cat "$W/collector.err" >&2; log "ERROR: collector did not start"; exit 1; }
PORT="$(cat "$W/collector.port")"
EP="http://127.0.0.1:$PORT/v1.1/events/json"
log "collector (pid $COLLECTOR_PID) on $EP"
n_bodies() { find "$W/bodies" -maxdepth 1 -name '[0-9]*.json' ! -name '*.meta.json' | wc -l; }
# Move the collector's bodies so far into directory $1.
take_bodies() { find "$W/bodies" -maxdepth 1 -name '[0-9]*.json' -exec mv -t "$1" {} +; }

# ---------------------------------------------------------------- helpers
# submit MODE OUTDIR: submit the job array, print its job id.
submit() {
    local jid
    jid=$(sbatch --parsable --array=0-$((N - 1)) --oversubscribe --ntasks=1 \
        --job-name="telespool-e2e-$1" --output="$2/slurm-%A_%a.out" --chdir="$2" \
        "$E2E_DIR/eval-job.sh" "$1" "$2") || return 1
    jid="${jid%%;*}"
    [[ "$jid" =~ ^[0-9]+$ ]] || { log "sbatch printed '$jid', not a job id"; return 1; }
    echo "$jid"
}
# wait_jobs JOBID: poll squeue until the array has left the queue (bounded).
wait_jobs() {
    local deadline=$((SECONDS + JOB_TIMEOUT)) out
    ((deadline <= DEADLINE)) || deadline=$DEADLINE
    while ((SECONDS < deadline)); do
        # A failing squeue (controller busy) is not "done": ask again. (A finished job is
        # forgotten only MinJobAge=60 s after its end, far longer than one poll.)
        if out=$(squeue -h -j "$1" -o %i 2>/dev/null) && [[ -z "$out" ]]; then
            return 0
        fi
        sleep 0.5
    done
    squeue >&2 || true
    return 1
}
# check_jobs MODE OUTDIR JOBID: every array task ran to its end, every telespool command
# in it exited 0, and it saw the test's environment.
check_jobs() {
    local mode="$1" out="$2" jid="$3" i bad=0 info rcs ncmd
    ncmd=$([[ $mode == local ]] && echo 10 || echo 8)
    local ids=()
    for ((i = 0; i < N; i++)); do
        info="$out/info.$mode.$i"
        if [[ ! -e "$out/done.$mode.$i" || ! -e "$info" ]]; then
            log "job $jid task $i did not run to its end; its output:"
            cat "$out"/slurm-*_"$i".out >&2 2>/dev/null || true
            bad=1
            continue
        fi
        rcs=$(cat "$out/rc.$mode.$i")
        if [[ $(grep -c '^0 ' <<<"$rcs") -ne $ncmd || $(wc -l <<<"$rcs") -ne $ncmd ]]; then
            log "job $jid task $i: telespool commands did not all exit 0:"
            sed 's/^/    /' "$out/rc.$mode.$i" "$out/stderr.$mode.$i" >&2
            bad=1
        fi
        local want_spool="$TELESPOOL_DIR"
        [[ $mode == local ]] && want_spool="$LOCAL_ROOT/job-$(sed -n 's/^job_id=//p' "$info")"
        local kv
        for kv in "array_job_id=$jid" "cluster=telespoolci" "home=$HOME" "xdg=$XDG_CONFIG_HOME" \
            "spool=$want_spool" "level=1 (MINIMAL) from $XDG_CONFIG_HOME/"; do
            # exact lines, except `config get`'s, which ends with the config file's path
            if ! grep -qxF "$kv" "$info" && ! { [[ $kv == level=* && "$(grep '^level=' "$info")" == "$kv"* ]]; }; then
                log "job $jid task $i: expected '$kv' in its environment, got: $(grep "^${kv%%=*}=" "$info")"
                bad=1
            fi
        done
        ids+=("$(sed -n 's/^job_id=//p' "$info")")
    done
    if [[ $(printf '%s\n' "${ids[@]}" | sort -u | grep -c .) -ne $N ]]; then
        log "job ids not distinct: ${ids[*]}"
        bad=1
    fi
    # Slurm's own view (kept MinJobAge=60 s after the end; no accounting database).
    local states
    states=$(scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort | uniq -c |
        awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
    if [[ -n "$states" && "$states" != "$N JobState=COMPLETED" ]]; then
        log "job $jid states: $states"
        bad=1
    fi
    return "$bad"
}
# inspect_is DIR JQ-LIKE-CHECK: python one-liner over `inspect --json`.
inspect_check() {
    local spool="$1" expr="$2"
    ts inspect --json --spool "$spool" >"$W/inspect.json" 2>"$W/inspect.err" || { cat "$W/inspect.err" >&2; return 1; }
    python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2], {}, {"d": d})
if not ok:
    print("inspect --json:", json.dumps({k: d.get(k) for k in ("queued", "in_flight", "rejected", "dropped", "by_kind", "last_upload")}), file=sys.stderr)
sys.exit(0 if ok else 1)' "$W/inspect.json" "$expr"
}
check_bodies() { python3 "$E2E_DIR/check_bodies.py" --jobs "$N" --arch "$ARCH" "${FORBID[@]}" "$@" >&2; }

# ================================================================ phase 1: shared spool
log "=== phase 1: $N jobs into one shared spool, then upload as cron would"
T0=$SECONDS
check "config set telemetry.level 1" ts config set telemetry.level 1
NOT_BEFORE="$(now_ts)"
JID1="$(submit shared "$W/jobs1")" || { fail "phase 1: sbatch failed"; finish; }
JOBIDS+=("$JID1")
log "submitted array job $JID1"
if wait_jobs "$JID1"; then
    pass "phase 1: job array $JID1 ($N tasks) left the queue within ${JOB_TIMEOUT}s ($((SECONDS - T0))s)"
else
    fail "phase 1: job array $JID1 still queued/running (waited $((SECONDS - T0))s)"
    finish
fi
T_JOBS1=$((SECONDS - T0))
check "phase 1: every job ran, every telespool command exited 0, jobs inherited HOME/XDG_CONFIG_HOME/TELESPOOL_DIR and level 1" \
    check_jobs shared "$W/jobs1" "$JID1"
E=$((N * 8))
check "phase 1: inspect shows $E queued events, by kind and status" inspect_check "$TELESPOOL_DIR" \
    "d['queued'] == $E and d['level'] == 1 and d['level_source'] == 'config' and d['by_kind'] == {'EvaluationTaskEvent': {'started': $((3 * N)), 'success': $((2 * N)), 'failure': $N}, 'LauncherJobEvent': {'started': $N, 'success': $(((N + 1) / 2)), 'failure': $((N / 2))}}"
check "phase 1: level 1 kept the model names off the disk (no 'secret-org' in the spool)" \
    bash -c '! grep -rqa secret-org "$1"' _ "$TELESPOOL_DIR"

# As cron runs it: a minimal environment (HOME, PATH, LOGNAME, SHELL), no TELESPOOL_DIR or
# XDG_CONFIG_HOME: the spool and the level must be found from HOME alone.
# cron_upload [TAG]: output in $W/cron[.TAG].out and .err.
cron_upload() {
    local o="$W/cron${1:+.$1}"
    timeout 90 env -i HOME="$HOME" LOGNAME="$(id -un)" SHELL=/bin/sh PATH=/usr/bin:/bin \
        "$BIN" upload --quiet --now --endpoint "$EP" >"$o.out" 2>"$o.err"
}
T0=$SECONDS
rc=0
cron_upload || rc=$?
T_UPLOAD1=$((SECONDS - T0))
if ((rc == 0)) && [[ ! -s "$W/cron.out" && ! -s "$W/cron.err" ]]; then
    pass "phase 1: cron-style 'upload --quiet --now' exited 0 and printed nothing (${T_UPLOAD1}s, $(n_bodies) requests)"
else
    fail "phase 1: cron-style upload exited $rc; stdout: $(head -c 500 "$W/cron.out"); stderr: $(head -c 500 "$W/cron.err")"
fi
before=$(n_bodies)
rc=0
cron_upload || rc=$?
if ((rc == 0)) && [[ $(n_bodies) -eq $before ]]; then
    pass "phase 1: second upload exited 0 and sent nothing"
else
    fail "phase 1: second upload exited $rc and sent $(($(n_bodies) - before)) requests; stderr: $(head -c 500 "$W/cron.err")"
fi
take_bodies "$W/phase1"
NOT_AFTER="$(now_ts)"
check "phase 1: bodies: each event once, one session per job, redacted, no ids/users/hosts/paths" \
    check_bodies --mode shared --out "$W/jobs1" --bodies "$W/phase1" --not-before "$NOT_BEFORE" --not-after "$NOT_AFTER"
check "phase 1: inspect afterwards: queued 0, nothing in flight or rejected, last upload ok" \
    inspect_check "$TELESPOOL_DIR" "d['queued'] == 0 and d['in_flight'] == 0 and d['rejected'] == 0 and d['dropped'] == 0 and (d['last_upload'] or {}).get('result') == 'ok'"

# ================================================================ phase 2: air-gapped
log "=== phase 2: $N jobs with node-local spools + export, then upload --from on the login node"
T0=$SECONDS
NOT_BEFORE="$(now_ts)"
JID2="$(submit local "$W/jobs2")" || { fail "phase 2: sbatch failed"; finish; }
JOBIDS+=("$JID2")
log "submitted array job $JID2"
if wait_jobs "$JID2"; then
    pass "phase 2: job array $JID2 ($N tasks) left the queue within ${JOB_TIMEOUT}s ($((SECONDS - T0))s)"
else
    fail "phase 2: job array $JID2 still queued/running (waited $((SECONDS - T0))s)"
    finish
fi
T_JOBS2=$((SECONDS - T0))
NOT_AFTER="$(now_ts)"
check "phase 2: every job ran, recorded into its node-local spool, exported; all commands exited 0" \
    check_jobs local "$W/jobs2" "$JID2"
empty_after_export() {
    local i
    for ((i = 0; i < N; i++)); do
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["queued"] == 0 else 1)' \
            "$W/jobs2/inspect.local.$i.json" || { log "task $i: spool not empty after export"; return 1; }
    done
}
check "phase 2: each node-local spool was empty after export" empty_after_export
check "phase 2: export files: $N files, each event once, redacted, no ids/users/hosts/paths" \
    check_bodies --mode local --out "$W/jobs2" --exports "$W/jobs2/exports" --not-before "$NOT_BEFORE" --not-after "$NOT_AFTER"
check "phase 2: the export files never held the model names" \
    bash -c '! grep -rqa secret-org "$1"' _ "$W/jobs2/exports"
check "phase 1 spool untouched by phase 2 (still empty)" inspect_check "$TELESPOOL_DIR" "d['queued'] == 0"

# The login node: a fresh spool, one `upload --from` per file, in batches of 3 events (so
# each job's 8 events take 3 requests: exactly once across batches too).
LOGIN_SPOOL="$W/login/spool"
BATCH2=3
upload_from_all() {
    local f rc=0
    for f in "$W/jobs2/exports"/export-*.jsonl; do
        TELESPOOL_BATCH_EVENTS=$BATCH2 ts upload --from "$f" --spool "$LOGIN_SPOOL" --endpoint "$EP" --now \
            >>"$W/from.out" 2>>"$W/from.err" || {
            rc=$?
            log "upload --from $f exited $rc: $(tail -n 3 "$W/from.err")"
            return 1
        }
    done
}
T0=$SECONDS
check "phase 2: upload --from each of the $N files into a fresh spool exited 0" upload_from_all
T_UPLOAD2=$((SECONDS - T0))
nb=$(n_bodies)
want_nb=$((N * ((8 + BATCH2 - 1) / BATCH2)))
if ((nb == want_nb)); then
    pass "phase 2: $nb requests of at most $BATCH2 events (TELESPOOL_BATCH_EVENTS=$BATCH2), ${T_UPLOAD2}s"
else
    fail "phase 2: $nb requests with TELESPOOL_BATCH_EVENTS=$BATCH2, expected $want_nb"
fi
take_bodies "$W/phase2"
check "phase 2: bodies: each event once, the exported sessions and times kept, redacted, no ids/users/hosts/paths" \
    check_bodies --mode local --out "$W/jobs2" --bodies "$W/phase2" --compare-exports "$W/jobs2/exports" --batch-events "$BATCH2" \
    --not-before "$NOT_BEFORE" --not-after "$NOT_AFTER"
check "phase 2: login spool afterwards: queued 0, nothing rejected" \
    inspect_check "$LOGIN_SPOOL" "d['queued'] == 0 and d['in_flight'] == 0 and d['rejected'] == 0 and (d['last_upload'] or {}).get('result') == 'ok'"
: >"$W/from.err"
check "phase 2: importing the same files again exits 0" upload_from_all
take_bodies "$W/phase2-again"
n_again=$(find "$W/phase2-again" -name '[0-9]*.json' ! -name '*.meta.json' | wc -l)
if ((n_again == 0)); then
    pass "phase 2: importing the same files again sent nothing"
else
    fail "phase 2: importing the same files again sent $n_again more requests"
fi
check "phase 2: login spool still empty after the second import" inspect_check "$LOGIN_SPOOL" "d['queued'] == 0"

# ================================================================ phase 3: cron while jobs run
# What really happens on a cluster: cron fires while jobs are recording, and runs overlap.
# The jobs pause E2E_RECORD_GAP seconds between records, so uploads interleave with them.
log "=== phase 3: $N jobs into the shared spool while two overlapping cron-style upload loops run"
mkdir -p "$W/jobs3" "$W/phase3"
T0=$SECONDS
NOT_BEFORE="$(now_ts)"
JID3="$(E2E_RECORD_GAP=0.2 submit shared "$W/jobs3")" || { fail "phase 3: sbatch failed"; finish; }
JOBIDS+=("$JID3")
log "submitted array job $JID3"
# race_loop TAG: cron-style uploads back to back until $W/jobs3.finished exists.
race_loop() {
    local k=0 rc
    while [[ ! -e "$W/jobs3.finished" ]]; do
        k=$((k + 1))
        rc=0
        cron_upload "race.$1.$k" || rc=$?
        echo "$rc" >>"$W/race.$1.rc"
        sleep 0.1
    done
}
race_loop a &
RACE_PIDS=("$!")
race_loop b &
RACE_PIDS+=("$!")
jobs_ok=1
wait_jobs "$JID3" || jobs_ok=0
T_JOBS3=$((SECONDS - T0))
n_during=$(n_bodies)
touch "$W/jobs3.finished"
wait "${RACE_PIDS[@]}" || true
RACE_PIDS=()
if ((jobs_ok)); then
    pass "phase 3: job array $JID3 ($N tasks) left the queue within ${JOB_TIMEOUT}s (${T_JOBS3}s)"
else
    fail "phase 3: job array $JID3 still queued/running (waited $((SECONDS - T0))s)"
    finish
fi
n_runs=$(cat "$W"/race.*.rc 2>/dev/null | wc -l || true)
n_bad=$(grep -cv '^0$' <(cat "$W"/race.*.rc) || true)
if ((n_bad == 0 && n_during > 0)); then
    pass "phase 3: $n_runs overlapping cron-style uploads while the jobs ran, all exited 0; $n_during requests sent before the jobs ended"
else
    fail "phase 3: $n_runs uploads while the jobs ran, $n_bad exited non-zero ($(sort "$W"/race.*.rc | uniq -c | tr -s ' \n' ' ')), $n_during requests before the jobs ended; $(cat "$W"/cron.race.*.err | sort | uniq -c | head -n 5)"
fi
check "phase 3: every job ran, every telespool command exited 0" check_jobs shared "$W/jobs3" "$JID3"
rc=0
cron_upload || rc=$?
if ((rc == 0)); then
    pass "phase 3: a last cron-style upload after the jobs exited 0"
else
    fail "phase 3: a last cron-style upload after the jobs exited $rc: $(head -c 500 "$W/cron.err")"
fi
take_bodies "$W/phase3"
NOT_AFTER="$(now_ts)"
check "phase 3: bodies: each event once, one session per job, redacted, no ids/users/hosts/paths" \
    check_bodies --mode shared --out "$W/jobs3" --bodies "$W/phase3" --not-before "$NOT_BEFORE" --not-after "$NOT_AFTER"
check "phase 3: inspect afterwards: queued 0, nothing in flight or rejected" \
    inspect_check "$TELESPOOL_DIR" "d['queued'] == 0 and d['in_flight'] == 0 and d['rejected'] == 0 and d['dropped'] == 0"

finish
