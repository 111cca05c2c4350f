#!/usr/bin/env bash
# tests/e2e/slurm-smoke.sh — checks the Slurm test cluster itself (.ci/lib/slurm.sh):
# starts it if needed, runs an 8-task job array as root, and checks that every task ran
# with SLURM_JOB_ID, SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID and SLURM_CLUSTER_NAME set,
# the variables telespool reads inside Slurm jobs. Leaves the cluster running (the e2e
# tests that follow use it); `bash .ci/lib/slurm.sh stop` stops it.
#
# Usage: tests/e2e/slurm-smoke.sh      (SMOKE_TIMEOUT=seconds to wait for the jobs, default 120)
set -euo pipefail
ME="slurm-smoke.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$REPO_ROOT/.ci/lib/slurm.sh" start

out="$(mktemp -d /var/tmp/slurm-smoke.XXXXXX)"
chmod 755 "$out"
# shellcheck disable=SC2016  # expanded by the job's shell, not here
jid=$(sbatch --parsable --array=1-8 --output="$out/slurm-%A_%a.out" --chdir="$out" \
    --wrap 'echo "$SLURM_JOB_ID $SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_CLUSTER_NAME $(id -un)" >"task.$SLURM_ARRAY_TASK_ID"')
jid="${jid%%;*}"
echo "$ME: submitted array job $jid; output in $out" >&2
deadline=$((SECONDS + ${SMOKE_TIMEOUT:-120}))
while [[ -n "$(squeue -h -j "$jid" 2>/dev/null)" ]]; do
    ((SECONDS < deadline)) || { squeue >&2; echo "$ME: ERROR: job $jid still queued/running after ${SMOKE_TIMEOUT:-120}s" >&2; exit 1; }
    sleep 1
done
fail=0
for t in 1 2 3 4 5 6 7 8; do
    read -r job arr task cluster user <"$out/task.$t" 2>/dev/null || { echo "$ME: FAIL: task $t wrote nothing" >&2; fail=1; continue; }
    if [[ "$arr" != "$jid" || "$task" != "$t" || "$cluster" != telespoolci || -z "$job" ]]; then
        echo "$ME: FAIL: task $t wrote '$job $arr $task $cluster $user'" >&2
        fail=1
    fi
done
[[ $fail -eq 0 ]] || exit 1
echo "$ME: 8/8 array tasks ran (cluster telespoolci, as $user)" >&2
rm -rf "$out"
