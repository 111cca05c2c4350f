#!/usr/bin/env bash
# .ci/lib/python-venv.sh — a Python venv with the real upstream NeMo Evaluator packages,
# for telespool's compatibility tests (the upstream telemetry client and the launcher's
# `config set telemetry.level` talking to/through telespool).
#
# Usage:
#     PY="$(bash .ci/lib/python-venv.sh [VENV_DIR])"
#         VENV_DIR defaults to $TELESPOOL_VENV, else /tmp/telespool-venv.
#     Prints the venv's python path on stdout (and nothing else); messages go to stderr.
#
# Environment (optional):
#     PYTHON   interpreter to build the venv from (default: python3 on PATH); 3.10–3.13,
#              as the pinned packages require.
#
# Idempotent: if VENV_DIR already holds a working venv with exactly the pinned versions
# (checked by importing nemo_evaluator.telemetry and asking pip for the versions), it is
# reused without touching the network. A broken or outdated venv is rebuilt. Concurrent
# calls for the same dir are serialised with a lock file next to it.
set -euo pipefail

ME="python-venv.sh"
msg() { echo "$ME: $*" >&2; }
die() { echo "$ME: ERROR: $*" >&2; exit 1; }

# The pinned upstream versions this project tests against (see SPEC: the launcher's
# `config set telemetry.level` and the harness's telemetry module).
PINS=(nemo-evaluator==0.2.8 nemo-evaluator-launcher==0.2.6)

V="${1:-${TELESPOOL_VENV:-/tmp/telespool-venv}}"
mkdir -p "$(dirname "$V")"
V="$(cd "$(dirname "$V")" && pwd)/$(basename "$V")"

# Serialise concurrent callers (e.g. two test jobs starting at once).
exec 9>"$V.lock"
flock -w 900 9 || die "timed out waiting for the lock $V.lock"

# Is $V a venv that already has exactly the pinned versions and imports cleanly?
venv_ok() {
    [[ -x "$V/bin/python" ]] || return 1
    "$V/bin/python" - "${PINS[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
import nemo_evaluator.telemetry  # noqa: F401  (the module telespool mirrors)
import nemo_evaluator_launcher   # noqa: F401
PY
}

if venv_ok; then
    msg "reusing $V (${PINS[*]})"
    echo "$V/bin/python"
    exit 0
fi

# Pick the base interpreter; resolve shims (pyenv) to the real executable so the venv
# does not depend on the shim's environment.
base="${PYTHON:-python3}"
command -v "$base" >/dev/null 2>&1 || die "no '$base' on PATH (set PYTHON=/path/to/python3.10-3.13)"
base="$("$base" -c 'import sys; print(sys.executable)')"
"$base" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' ||
    die "$base is Python $("$base" -V 2>&1); the pinned packages need 3.10-3.13 (set PYTHON=...)"

if [[ -e "$V" ]]; then
    # Only ever delete something that is recognisably a venv (or an empty dir).
    if [[ -f "$V/pyvenv.cfg" ]] || [[ -d "$V" && -z "$(ls -A "$V")" ]]; then
        msg "rebuilding $V (missing or outdated packages)"
        rm -rf "$V"
    else
        die "$V exists and is not a venv; refusing to overwrite it"
    fi
fi

msg "creating venv $V from $base ($("$base" -V 2>&1))"
if ! "$base" -m venv "$V" 2>/dev/null; then
    rm -rf "$V"
    # Debian's own python3 needs python3-venv (ensurepip) for `-m venv`.
    case "$base" in
        /usr/bin/python3*)
            REPO_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
            # shellcheck source=.ci/lib/apt.sh
            CI_LOG_TAG="$ME" source "$REPO_LIB/apt.sh"
            ver="$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            CI_LOG_TAG="$ME" ci_apt_ensure python3-venv "python$ver-venv" || die "could not install python3-venv"
            "$base" -m venv "$V" || die "python -m venv failed even with python3-venv"
            ;;
        *) die "'$base -m venv $V' failed" ;;
    esac
fi

t0=$SECONDS
msg "pip install ${PINS[*]} (from PyPI)"
"$V/bin/python" -m pip install --disable-pip-version-check --no-input -q "${PINS[@]}" >&2 ||
    die "pip install ${PINS[*]} failed"
venv_ok || {
    "$V/bin/python" -c 'import nemo_evaluator.telemetry' >&2 || true
    die "installed, but the pinned versions do not import (see above)"
}
msg "ready in $((SECONDS - t0))s: $V/bin/python"
echo "$V/bin/python"
