#!/usr/bin/env bash
# tests/nfs/selftest.sh — checks the NFS test harness itself: for each NFS version given
# (default: 3 and 4.2) boots the UML guest through tests/nfs/uml-run.sh and runs
# tests/nfs/selftest-payload.sh there (concurrent sqlite3 writers, flock and fcntl locks on
# a real kernel NFS mount). Exit status: 0 only if every version passed.
#
# Usage: tests/nfs/selftest.sh [3] [4.2]
#        NFS_SELFTEST_ROWS=N  rows per writer (default 200; each row is one sqlite3 launch,
#                             and process start-up is slow in the guest: ~50 s for 4x200)
set -euo pipefail
ME="selftest.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
# The payload runs host binaries inside the guest, which has no network: install them
# on the host first.
# shellcheck source=.ci/lib/apt.sh
CI_LOG_TAG="$ME" source "$REPO_ROOT/.ci/lib/apt.sh"
CI_LOG_TAG="$ME" ci_apt_ensure sqlite3 util-linux python3-minimal

versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3 4.2)
failed=0
for v in "${versions[@]}"; do
    t0=$SECONDS
    rc=0
    UML_PASS_ENV="${UML_PASS_ENV:-} NFS_SELFTEST_ROWS" \
        "$HERE/uml-run.sh" "$v" "$HERE/selftest-payload.sh" || rc=$?
    if [[ $rc -eq 0 ]]; then
        echo "$ME: NFSv$v: PASS ($((SECONDS - t0))s)" >&2
    else
        echo "$ME: NFSv$v: FAIL rc=$rc ($((SECONDS - t0))s)" >&2
        failed=$((failed + 1))
    fi
done
[[ $failed -eq 0 ]] || { echo "$ME: ERROR: $failed NFS version(s) failed" >&2; exit 1; }
