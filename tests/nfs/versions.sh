# tests/nfs/versions.sh — sourced by run.sh and selftest.sh: installs what a payload runs
# inside the guest (which has no network) on the host, then boots the UML guest once per
# NFS version and runs the payload there. Set ME, HERE and REPO_ROOT first.
#
#   nfs_for_each_version PAYLOAD "ENV NAMES TO PASS" [VERSION...]   (default: 3 4.2)
#
# Exits 1 naming how many versions failed; never skips a version.

# shellcheck source=.ci/lib/apt.sh
CI_LOG_TAG="$ME" source "$REPO_ROOT/.ci/lib/apt.sh"
CI_LOG_TAG="$ME" ci_apt_ensure sqlite3 util-linux python3-minimal

nfs_for_each_version() {
    local payload="$1" pass_env="$2"
    shift 2
    local versions=("$@")
    [[ ${#versions[@]} -gt 0 ]] || versions=(3 4.2)
    local failed=0 v t0 rc
    for v in "${versions[@]}"; do
        t0=$SECONDS
        rc=0
        UML_PASS_ENV="${UML_PASS_ENV:-} $pass_env" "$HERE/uml-run.sh" "$v" "$payload" || rc=$?
        if [[ $rc -eq 0 ]]; then
            echo "$ME: NFSv$v: PASS ($((SECONDS - t0))s)" >&2
        else
            echo "$ME: NFSv$v: FAIL rc=$rc ($((SECONDS - t0))s)" >&2
            failed=$((failed + 1))
        fi
    done
    [[ $failed -eq 0 ]] || { echo "$ME: ERROR: $failed NFS version(s) failed" >&2; exit 1; }
}
