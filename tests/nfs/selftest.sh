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
# shellcheck source=tests/nfs/versions.sh
source "$HERE/versions.sh"
nfs_for_each_version "$HERE/selftest-payload.sh" "NFS_SELFTEST_ROWS" "$@"
