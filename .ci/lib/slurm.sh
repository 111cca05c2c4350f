#!/usr/bin/env bash
# .ci/lib/slurm.sh — a real one-node Slurm cluster on this machine, for telespool's
# end-to-end tests (jobs that record telemetry from inside Slurm job arrays).
#
# Usage, as a command:
#     bash .ci/lib/slurm.sh start     # install if missing, configure, start, wait for idle
#     bash .ci/lib/slurm.sh stop      # stop the daemons this script started
#     bash .ci/lib/slurm.sh status    # exit 0 if the node is idle/mixed/allocated
# or sourced:
#     source .ci/lib/slurm.sh; slurm_ci_start; ...; slurm_ci_stop
#
# Environment (all optional):
#     SLURM_CI_DIR      state/spool/log/pid dir       (default /var/spool/slurm-telespoolci)
#     SLURM_CONF        slurm.conf path written/used  (default /etc/slurm/slurm.conf, the path
#                       sbatch/squeue/sinfo read without any environment, so tests need none)
#     SLURM_CI_TIMEOUT  seconds to wait for the node to become idle (default 60)
#
# Why it looks like this:
#   * CI runs as root on a fresh Debian 12 machine with no systemd as PID 1, so the
#     daemons are started by hand (they fork and write pid files); `stop` kills only the
#     pids in those files.
#   * ProctrackType=proctrack/linuxproc + TaskPlugin=task/none: no cgroup plugins, which
#     need a delegated cgroup tree that this sandbox does not give.
#   * No accounting (no slurmdbd), ClusterName=telespoolci so tests can check that
#     SLURM_CLUSTER_NAME reaches telespool.
#   * SlurmUser=root and jobs run as root: Slurm accepts root jobs unless DisableRootJobs
#     is set, which we do not set.
#   * All Slurm traffic is on loopback: NodeAddr/SlurmctldHost address 127.0.0.1.
#   * The node line (CPUs, sockets, cores, RealMemory) comes from `slurmd -C`, i.e. the
#     same numbers slurmd registers with, so the node is never drained as "Low RealMemory".

# set -euo pipefail only when run as a command: when sourced we do not change the caller's
# shell options; the functions below check every step themselves.
_SLURM_CI_SELF="${BASH_SOURCE[0]}"
_SLURM_CI_LIBDIR="$(cd "$(dirname "$_SLURM_CI_SELF")" && pwd)"
# shellcheck source=.ci/lib/apt.sh
source "$_SLURM_CI_LIBDIR/apt.sh"

_slurm_ci_msg() { echo "slurm.sh: $*" >&2; }
_slurm_ci_die() { echo "slurm.sh: ERROR: $*" >&2; return 1; }

_slurm_ci_vars() {
    SLURM_CI_DIR="${SLURM_CI_DIR:-/var/spool/slurm-telespoolci}"
    _SLURM_CI_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
    SLURM_CI_TIMEOUT="${SLURM_CI_TIMEOUT:-60}"
    _SLURM_CI_NODE="$(hostname -s)"
}

# Is the process whose pid is in file $1 alive?
_slurm_ci_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

_slurm_ci_write_conf() {
    local nodeline
    # `slurmd -C` prints "NodeName=<h> CPUs=.. Boards=.. ... RealMemory=.." then "UpTime=..".
    nodeline=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1) ||
        { _slurm_ci_die "slurmd -C failed"; return 1; }
    [[ -n "$nodeline" ]] || { _slurm_ci_die "slurmd -C printed no NodeName line"; return 1; }
    # Use `hostname -s` as the node name (slurmd is also started with -N that name).
    nodeline="NodeName=$_SLURM_CI_NODE ${nodeline#NodeName=* }"
    mkdir -p "$(dirname "$_SLURM_CI_CONF")"
    local tmp="$_SLURM_CI_CONF.tmp.$$"
    cat >"$tmp" <<EOF
# Written by telespool .ci/lib/slurm.sh — one-node test cluster. Do not edit by hand.
ClusterName=telespoolci
SlurmctldHost=$_SLURM_CI_NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_CI_DIR/ctld
SlurmdSpoolDir=$SLURM_CI_DIR/slurmd
SlurmctldPidFile=$SLURM_CI_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_CI_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_CI_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_CI_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
MinJobAge=60
MaxArraySize=10001
$nodeline NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$_SLURM_CI_NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES:8
EOF
    mv -f "$tmp" "$_SLURM_CI_CONF"
    _slurm_ci_msg "wrote $_SLURM_CI_CONF ($nodeline)"
}

_slurm_ci_start_munge() {
    # munged runs as the munge user (it refuses root without --force, and the key is
    # owned by munge). Debian's postinst normally creates the key; make one if missing.
    if [[ ! -s /etc/munge/munge.key ]]; then
        _slurm_ci_msg "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if _slurm_ci_alive /run/munge/munged.pid && munge -n </dev/null | unmunge >/dev/null 2>&1; then
        _slurm_ci_msg "munged already running (pid $(cat /run/munge/munged.pid))"
        return 0
    fi
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged ||
        { _slurm_ci_die "munged failed to start (see /var/log/munge/munged.log)"; return 1; }
    : >"$SLURM_CI_DIR/run/munged.started-by-us"
    local _
    for _ in $(seq 1 20); do
        if munge -n </dev/null | unmunge >/dev/null 2>&1; then
            _slurm_ci_msg "munged started (pid $(cat /run/munge/munged.pid 2>/dev/null))"
            return 0
        fi
        sleep 0.5
    done
    tail -n 20 /var/log/munge/munged.log >&2 || true
    _slurm_ci_die "munge credential round trip (munge -n | unmunge) failed"
}

# Print the node's state word(s) (idle, mixed, down*, ...), empty if sinfo fails.
_slurm_ci_state() {
    local out
    out=$(SLURM_CONF="$_SLURM_CI_CONF" timeout 10 sinfo -h -o %T 2>/dev/null) || out=""
    echo "${out//$'\n'/ }"   # several lines (partitions) joined into one
}

_slurm_ci_usable() {
    # idle, or busy with jobs (a second `start` while tests run must not fail).
    case "$(_slurm_ci_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

slurm_ci_start() {
    _slurm_ci_vars
    ci_apt_ensure slurmctld slurmd slurm-client munge || return 1
    mkdir -p "$SLURM_CI_DIR"/{ctld,slurmd,run,log}
    chmod 0755 "$SLURM_CI_DIR"

    if _slurm_ci_alive "$SLURM_CI_DIR/run/slurmctld.pid" &&
        _slurm_ci_alive "$SLURM_CI_DIR/run/slurmd.pid" && _slurm_ci_usable; then
        _slurm_ci_msg "already running, node $_SLURM_CI_NODE is $(_slurm_ci_state)"
        return 0
    fi

    _slurm_ci_start_munge || return 1
    # Rewrite the config only when no daemon of ours is running, so a half-up cluster
    # is not given a config that differs from what its running daemon read.
    if ! _slurm_ci_alive "$SLURM_CI_DIR/run/slurmctld.pid" &&
        ! _slurm_ci_alive "$SLURM_CI_DIR/run/slurmd.pid"; then
        _slurm_ci_write_conf || return 1
    fi

    if ! _slurm_ci_alive "$SLURM_CI_DIR/run/slurmctld.pid"; then
        # -i: ignore unreadable state left by an earlier run instead of refusing to start.
        slurmctld -i -f "$_SLURM_CI_CONF" ||
            { tail -n 30 "$SLURM_CI_DIR/log/slurmctld.log" >&2 || true
              _slurm_ci_die "slurmctld failed to start"; return 1; }
        _slurm_ci_msg "slurmctld started"
    fi
    if ! _slurm_ci_alive "$SLURM_CI_DIR/run/slurmd.pid"; then
        slurmd -f "$_SLURM_CI_CONF" -N "$_SLURM_CI_NODE" ||
            { tail -n 30 "$SLURM_CI_DIR/log/slurmd.log" >&2 || true
              _slurm_ci_die "slurmd failed to start"; return 1; }
        _slurm_ci_msg "slurmd started"
    fi

    local deadline=$((SECONDS + SLURM_CI_TIMEOUT)) st=""
    while ((SECONDS < deadline)); do
        st=$(_slurm_ci_state)
        if [[ "$st" == idle ]]; then
            _slurm_ci_msg "node $_SLURM_CI_NODE is idle (cluster telespoolci, conf $_SLURM_CI_CONF)"
            return 0
        fi
        # A node left DOWN/DRAINED by an earlier run: ask for it back once in a while.
        case "$st" in
            down* | drain* | fail*)
                SLURM_CONF="$_SLURM_CI_CONF" scontrol update NodeName="$_SLURM_CI_NODE" \
                    State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "slurm.sh: ===== node state: '${st:-<sinfo failed>}'" >&2
    SLURM_CONF="$_SLURM_CI_CONF" sinfo -R >&2 2>&1 || true
    echo "slurm.sh: ===== slurmctld.log (tail)" >&2
    tail -n 40 "$SLURM_CI_DIR/log/slurmctld.log" >&2 2>/dev/null || true
    echo "slurm.sh: ===== slurmd.log (tail)" >&2
    tail -n 40 "$SLURM_CI_DIR/log/slurmd.log" >&2 2>/dev/null || true
    _slurm_ci_die "node $_SLURM_CI_NODE not idle after ${SLURM_CI_TIMEOUT}s (state '${st}')"
}

# Kill the process in pid file $1 (TERM, then KILL after 15 s); $2 is a name for messages.
_slurm_ci_kill_pidfile() {
    local f="$1" name="$2" pid
    if ! _slurm_ci_alive "$f"; then rm -f "$f"; return 0; fi
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        _slurm_ci_msg "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
    _slurm_ci_msg "stopped $name (pid $pid)"
}

slurm_ci_stop() {
    _slurm_ci_vars
    _slurm_ci_kill_pidfile "$SLURM_CI_DIR/run/slurmd.pid" slurmd
    _slurm_ci_kill_pidfile "$SLURM_CI_DIR/run/slurmctld.pid" slurmctld
    # Only stop munged if this script started it (someone else's munged is left alone).
    if [[ -e "$SLURM_CI_DIR/run/munged.started-by-us" ]]; then
        _slurm_ci_kill_pidfile /run/munge/munged.pid munged
        rm -f "$SLURM_CI_DIR/run/munged.started-by-us"
    fi
    return 0
}

slurm_ci_status() {
    _slurm_ci_vars
    local st
    st=$(_slurm_ci_state)
    echo "slurm.sh: node $_SLURM_CI_NODE state: ${st:-<sinfo failed>}"
    _slurm_ci_usable
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
        start) slurm_ci_start ;;
        stop) slurm_ci_stop ;;
        status) slurm_ci_status ;;
        *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
    esac
fi
