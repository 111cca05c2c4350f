#!/usr/bin/env bash
# tests/contrib/check.sh — syntax checks for what contrib/ ships: the systemd service and
# timer (`systemd-analyze verify`, with the ExecStart path pointed at a real binary) and
# the crontab line (five schedule fields and a telespool command).
#
# Usage: TELESPOOL_BIN=/abs/path/to/telespool tests/contrib/check.sh
set -euo pipefail
ME="contrib/check.sh"
cd "$(dirname "$0")/../.."
: "${TELESPOOL_BIN:?set TELESPOOL_BIN to the telespool binary}"
bin="$(cd "$(dirname "$TELESPOOL_BIN")" && pwd)/$(basename "$TELESPOOL_BIN")"

# The crontab: one active line, five schedule fields, then `.../telespool upload`.
lines=$(grep -v '^\s*#' contrib/crontab | grep -v '^\s*$')
[[ $(printf '%s\n' "$lines" | wc -l) -eq 1 ]] || { echo "$ME: FAIL: crontab must hold one line" >&2; exit 1; }
printf '%s\n' "$lines" | grep -Eq '^([0-9*/,-]+\s+){5}\S*telespool upload( |$)' ||
    { echo "$ME: FAIL: crontab line is not '<5 fields> .../telespool upload ...': $lines" >&2; exit 1; }
echo "$ME: crontab ok: $lines"

if ! command -v systemd-analyze >/dev/null; then
    [[ "${CI:-}" != true ]] || { echo "$ME: FAIL: systemd-analyze missing in CI" >&2; exit 1; }
    echo "$ME: SKIPPED: systemd-analyze is not installed" >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp contrib/systemd/telespool-upload.service contrib/systemd/telespool-upload.timer "$work/"
sed -i "s|%h/.cargo/bin/telespool|$bin|" "$work/telespool-upload.service"
# verify exits 0 on settings it merely ignores ("Failed to parse ..., ignoring"): any
# word from it is a failure here.
out=$(systemd-analyze verify --man=no "$work/telespool-upload.service" "$work/telespool-upload.timer" 2>&1) ||
    { echo "$ME: FAIL: $out" >&2; exit 1; }
[[ -z "$out" ]] || { echo "$ME: FAIL: systemd-analyze verify: $out" >&2; exit 1; }
echo "$ME: systemd units ok"
