#!/usr/bin/env bash
# .ci/lib/apt.sh — sourceable helper: install Debian packages only when missing.
#
#   source .ci/lib/apt.sh
#   ci_apt_ensure pkg1 pkg2 ...
#
# Why: CI starts on a fresh Debian 12 machine, so every script must install what it
# needs itself; on a developer machine that already has the packages this is a no-op
# (no apt-get update, no network). Services are never started by the install itself:
# there is no systemd here and, e.g., nfs-kernel-server's postinst would try to start a
# kernel NFS server the host kernel does not have. We therefore make sure a
# policy-rc.d that denies service starts (exit 101) is in place during the install.

# Guard against double sourcing.
if [[ -n "${_CI_APT_SH_LOADED:-}" ]]; then return 0; fi
_CI_APT_SH_LOADED=1

ci_apt_missing() {
    # Prints the names among "$@" that are not installed.
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ "$st" == "install ok installed" ]] || printf '%s\n' "$p"
    done
}

ci_apt_ensure() {
    local tag="${CI_LOG_TAG:-apt.sh}"
    local missing
    missing=$(ci_apt_missing "$@")
    [[ -z "$missing" ]] && return 0
    # shellcheck disable=SC2086
    echo "$tag: installing missing packages:" $missing >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "$tag: ERROR: need root to apt-get install (CI runs as root)" >&2
        return 1
    fi
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from telespool .ci/lib/apt.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 log
    # apt/dpkg chatter goes to a log that is shown only when something fails.
    log=$(mktemp "${TMPDIR:-/tmp}/ci-apt.XXXXXX.log")
    export DEBIAN_FRONTEND=noninteractive
    # Package lists may be absent or stale on a fresh machine: update once per process.
    if [[ -z "${_CI_APT_UPDATED:-}" ]]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1 || rc=$?
        _CI_APT_UPDATED=1
    fi
    if [[ $rc -eq 0 ]]; then
        # shellcheck disable=SC2086
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >>"$log" 2>&1 || rc=$?
    fi
    if [[ $made_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ $rc -ne 0 ]]; then
        tail -n 40 "$log" >&2 || true
        # shellcheck disable=SC2086
        echo "$tag: ERROR: apt-get failed (rc=$rc) for:" $missing "(full log: $log)" >&2
        return "$rc"
    fi
    rm -f "$log"
    missing=$(ci_apt_missing "$@")
    if [[ -n "$missing" ]]; then
        # shellcheck disable=SC2086
        echo "$tag: ERROR: still not installed after apt-get:" $missing >&2
        return 1
    fi
}
