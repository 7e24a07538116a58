#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2001  # $SLURM_* in single quotes expand inside the jobs
# Smoke test for a running local Slurm (start.sh first). Any user may run it.
#   launchers/slurm_local/smoke_test.sh [--requeue] [--python PATH]
# Checks: sbatch, a job array, sacct COMPLETED for all, optionally
# scontrol requeue of a running job (~35 s), and submitit (2 jobs) if the python
# (default: <repo>/.venv/bin/python) can import submitit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REQUEUE=0
PY=$(cd "$KIT_DIR/../.." && pwd)/.venv/bin/python
while [[ $# -gt 0 ]]; do
    case $1 in
        --requeue) REQUEUE=1 ;;
        --python) PY=$2; shift ;;
        -h|--help) sed -n '3,7p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done

WORK=$(mktemp -d /tmp/pet-slurm-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# wait_sacct TIMEOUT JOBID -> until every allocation of JOBID (array tasks too)
# has a final state in sacct
wait_final() {
    local deadline=$(( $(date +%s) + $1 )) states
    while :; do
        states=$(sacct -j "$2" -X -n -P --format=State 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n $states && ! $states =~ (PENDING|RUNNING|REQUEUED|COMPLETING|SUSPENDED) ]]; then
            return 0
        fi
        (( $(date +%s) < deadline )) || return 1
        sleep 0.5
    done
}
check_completed() {  # check_completed JOBID EXPECTED_COUNT
    local out n
    out=$(sacct -j "$1" -X -n -P --format=JobID,State,ExitCode)
    echo "$out" | sed 's/^/    /'
    n=$(echo "$out" | grep -c '|COMPLETED|0:0$' || true)
    [[ $n -eq $2 ]] || die "job $1: expected $2 COMPLETED allocations, got $n"
}

log "sbatch --wrap 'hostname; sleep 2'"
j1=$(sbatch --parsable --wrap 'hostname; sleep 2')
log "sbatch --array=0-3 --cpus-per-task=1"
j2=$(sbatch --parsable --array=0-3 --cpus-per-task=1 --wrap 'echo $SLURM_ARRAY_TASK_ID; sleep 3')
wait_final 120 "$j1" || die "job $j1 did not finish"
wait_final 120 "$j2" || die "array job $j2 did not finish"
check_completed "$j1" 1
check_completed "$j2" 4
grep -qx "$(hostname)" "slurm-$j1.out" || die "unexpected output: $(cat "slurm-$j1.out")"
for t in 0 1 2 3; do grep -qx "$t" "slurm-${j2}_$t.out" || die "array task $t output wrong"; done
log "OK: sbatch + array job COMPLETED in sacct"

if [[ $REQUEUE -eq 1 ]]; then
    j3=$(sbatch --parsable --wrap 'echo run $SLURM_RESTART_COUNT; sleep 4')
    for _ in $(seq 120); do [[ $(squeue -h -j "$j3" -o %T) == RUNNING ]] && break; sleep 0.25; done
    [[ $(squeue -h -j "$j3" -o %T) == RUNNING ]] || die "job $j3 never started"
    t=$(date +%s)
    scontrol requeue "$j3"
    log "requeued running job $j3; waiting for it to run again (~cred_expire+1 s)"
    sleep 2
    wait_final 180 "$j3" || die "requeued job $j3 did not finish"
    sacct -j "$j3" -X -n -P --duplicates --format=JobID,State,ExitCode,Start,End | sed 's/^/    /'
    grep -qx 'run 1' "slurm-$j3.out" || die "requeued job did not run a 2nd time: $(cat "slurm-$j3.out")"
    log "OK: requeued job ran again and COMPLETED ($(( $(date +%s) - t ))s after requeue)"
fi

if [[ -x $PY ]] && "$PY" -c 'import submitit' 2>/dev/null; then
    log "submitit via $PY"
    "$PY" - "$WORK/submitit" <<'PY'
import sys, time, submitit

def square(x):
    import os
    return x * x, int(os.environ["SLURM_CPUS_PER_TASK"])

t = time.time()
ex = submitit.AutoExecutor(folder=sys.argv[1] + "/%j")
assert ex.cluster == "slurm", ex.cluster
ex.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
jobs = [ex.submit(square, i) for i in (3, 4)]
res = [j.result() for j in jobs]
t_res = time.time() - t
# job.state is cached by submitit and sacct lags squeue by a few seconds, so
# right after result() it can still read UNKNOWN/RUNNING: poll with a forced
# sacct call (bounded) before asserting.
first = [j.state for j in jobs]
deadline = time.time() + 30
while True:
    jobs[0].watcher.update()
    states = [j.state for j in jobs]
    if states == ["COMPLETED", "COMPLETED"] or time.time() > deadline:
        break
    time.sleep(0.5)
print("    submitit jobs", [j.job_id for j in jobs], "results", res, "in %.1fs;" % t_res,
      "states", first, "right after result() ->", states, "after %.1fs" % (time.time() - t))
assert res == [(9, 1), (16, 1)], res
assert states == ["COMPLETED", "COMPLETED"], states
PY
    log "OK: submitit"
else
    log "skipping submitit check (no $PY with submitit; use --python)"
fi
log "smoke test passed"
