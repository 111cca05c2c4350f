#!/bin/bash
# tests/e2e/eval-job.sh — the sbatch script of tests/e2e/slurm.sh. Records telemetry the way
# an evaluation job does: a LauncherJobEvent `started`, EvaluationTaskEvents (started /
# success / failure with durations; two of them from a job step started with `srun`, one
# with `record --json`, one with `record --json -` on stdin) and a final LauncherJobEvent.
#
#   sbatch --array=0-7 tests/e2e/eval-job.sh shared|local OUTDIR
#
# shared: into the spool the environment names (TELESPOOL_DIR, the "shared home").
# local:  into a node-local spool, $E2E_LOCAL_ROOT/job-$SLURM_JOB_ID, then
#         `telespool export --output OUTDIR/exports/export-$SLURM_JOB_ID.jsonl` and the
#         node-local spool is wiped, as a node-local disk would be after the job.
#
# Unlike a production job (`telespool record ... || true`), a failing telespool command
# here must be visible: each command's exit status goes to OUTDIR/rc.MODE.INDEX, its
# stderr to OUTDIR/stderr.MODE.INDEX, and the job exits 1 if any failed. The job's own
# identity (job id, host, user, paths, environment) goes to OUTDIR/info.MODE.INDEX, so
# the test can check that none of it reaches a request body.
#
# Environment, inherited from the submitting shell (sbatch's default --export=ALL):
# TELESPOOL_BIN, HOME, XDG_CONFIG_HOME, TELESPOOL_DIR, E2E_LOCAL_ROOT (local mode), and
# E2E_RECORD_GAP (seconds to pause after each command, so uploads can interleave; optional).
set -uo pipefail

mode="$1" out="$2"
bin="$TELESPOOL_BIN"
i="$SLURM_ARRAY_TASK_ID"
tag="$mode.$i"
model="secret-org/model-$i"
rcf="$out/rc.$tag"
errf="$out/stderr.$tag"
: >"$rcf"
: >"$errf"

case "$mode" in
    shared) ;;
    local) export TELESPOOL_DIR="$E2E_LOCAL_ROOT/job-$SLURM_JOB_ID" ;;
    *) echo "eval-job.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac

failed=0
# run LABEL CMD...: run CMD, append "STATUS LABEL" to the rc file.
run() {
    local label="$1" rc=0
    shift
    "$@" 2>>"$errf" || rc=$?
    echo "$rc $label" >>"$rcf"
    ((rc == 0)) || failed=1
    if [[ -n "${E2E_RECORD_GAP:-}" ]]; then sleep "$E2E_RECORD_GAP"; fi
}

{
    echo "job_id=$SLURM_JOB_ID"
    echo "array_job_id=$SLURM_ARRAY_JOB_ID"
    echo "cluster=${SLURM_CLUSTER_NAME-}"
    echo "node=${SLURMD_NODENAME-}"
    echo "host=$(hostname)"
    echo "host_s=$(hostname -s)"
    echo "host_f=$(timeout 5 hostname -f 2>/dev/null || hostname)"
    echo "user=$(id -un)"
    echo "home=$HOME"
    echo "xdg=${XDG_CONFIG_HOME-}"
    echo "spool=${TELESPOOL_DIR-}"
    echo "pwd=$PWD"
    echo "submit_dir=${SLURM_SUBMIT_DIR-}"
    echo "level=$("$bin" config get telemetry.level 2>>"$errf" | head -n1)"
} >"$out/info.$tag"

launcher() {
    run "launcher $1" "$bin" record launcher-job --executor slurm --deployment vllm \
        --model "$model" --status "$1" --task mmlu --task gsm8k --task hellaswag --exporter mlflow
}

launcher started
run "mmlu started (--json)" "$bin" record --json \
    "{\"name\": \"EvaluationTaskEvent\", \"parameters\": {\"task\": \"mmlu\", \"frameworkName\": \"lm-eval\", \"model\": \"$model\", \"status\": \"started\"}}"
run "mmlu success" "$bin" record evaluation-task --task mmlu --framework lm-eval \
    --model "$model" --status success --duration "$i.15"
run "gsm8k started" "$bin" record evaluation-task --task gsm8k --framework lm-eval \
    --model "$model" --status started
run "gsm8k failure" "$bin" record evaluation-task --task gsm8k --framework lm-eval \
    --model "$model" --status failure --duration "$i.25"
# A job step: same SLURM_JOB_ID, so the same session.
run "hellaswag started (srun)" srun --ntasks=1 --job-name=telespool-e2e-step "$bin" record \
    evaluation-task --task hellaswag --framework lm-eval --model "$model" --status started
run "hellaswag success (--json -)" "$bin" record --json - <<EOF
{"name": "EvaluationTaskEvent", "parameters": {"task": "hellaswag", "frameworkName": "lm-eval", "model": "$model", "executionDurationSeconds": $i.35, "status": "success"}}
EOF
if ((i % 2 == 0)); then launcher success; else launcher failure; fi

if [[ "$mode" == local ]]; then
    run "export" "$bin" export --output "$out/exports/export-$SLURM_JOB_ID.jsonl"
    run "inspect after export" "$bin" inspect --json >"$out/inspect.$tag.json"
    rm -rf "$TELESPOOL_DIR"
fi

echo done >"$out/done.$tag"
exit "$failed"
