#!/usr/bin/env bash
# tests/nfs/run.sh — runs tests/nfs/telespool.sh on a real kernel NFS mount inside a
# user-mode-Linux guest, for NFSv3 and NFSv4.2 (or the versions given). Needs root (CI
# runs as root). Never skips: if the guest or the mount cannot be made, it fails loudly.
#
# Usage: TELESPOOL_BIN=/abs/path/to/telespool tests/nfs/run.sh [3] [4.2]
set -euo pipefail
ME="nfs/run.sh"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
: "${TELESPOOL_BIN:?set TELESPOOL_BIN to the telespool binary}"
TELESPOOL_BIN="$(cd "$(dirname "$TELESPOOL_BIN")" && pwd)/$(basename "$TELESPOOL_BIN")"
export TELESPOOL_BIN
[[ -x "$TELESPOOL_BIN" ]] || { echo "$ME: ERROR: no binary at $TELESPOOL_BIN" >&2; exit 1; }
# What the payload runs inside the guest must be installed on the host first.
# shellcheck source=.ci/lib/apt.sh
CI_LOG_TAG="$ME" source "$REPO_ROOT/.ci/lib/apt.sh"
CI_LOG_TAG="$ME" ci_apt_ensure sqlite3 util-linux python3-minimal

versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3 4.2)
failed=0
for v in "${versions[@]}"; do
    t0=$SECONDS
    rc=0
    UML_PASS_ENV="${UML_PASS_ENV:-} NFS_WRITERS NFS_EVENTS_EACH" \
        "$HERE/uml-run.sh" "$v" "$HERE/telespool.sh" || rc=$?
    if [[ $rc -eq 0 ]]; then
        echo "$ME: NFSv$v: PASS ($((SECONDS - t0))s)" >&2
    else
        echo "$ME: NFSv$v: FAIL rc=$rc ($((SECONDS - t0))s)" >&2
        failed=$((failed + 1))
    fi
done
[[ $failed -eq 0 ]] || { echo "$ME: ERROR: $failed NFS version(s) failed" >&2; exit 1; }
