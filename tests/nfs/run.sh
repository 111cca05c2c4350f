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
# shellcheck source=tests/nfs/versions.sh
source "$HERE/versions.sh"
nfs_for_each_version "$HERE/telespool.sh" "NFS_WRITERS NFS_EVENTS_EACH" "$@"
