#!/usr/bin/env bash
# Stop the private single-node Slurm started by start.sh (idempotent).
#   sudo launchers/slurm_local/stop.sh              # cancel jobs, stop daemons (state kept)
#   sudo launchers/slurm_local/stop.sh --keep-jobs  # no scancel: running jobs go on and the next start.sh recovers them
#   sudo launchers/slurm_local/stop.sh --purge      # also delete the state dir + the configs we wrote
# Daemons are stopped via their pid files: SIGTERM, bounded wait, then SIGKILL.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KEEP_JOBS=0 PURGE=0
for a in "$@"; do
    case $a in
        --keep-jobs) KEEP_JOBS=1 ;;
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) die "unknown argument: $a" ;;
    esac
done
need_root
take_lock
STOP_TIMEOUT=${PET_SLURM_STOP_TIMEOUT:-20}

# stop_pidfile NAME PIDFILE COMM
stop_pidfile() {
    local name=$1 pidfile=$2 comm=$3 pid i
    if ! pid=$(pid_alive "$pidfile" "$comm"); then
        rm -f "$pidfile" 2>/dev/null || true
        log "$name not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < STOP_TIMEOUT * 5; i++ )); do
        proc_running "$pid" || break
        sleep 0.2
    done
    if proc_running "$pid"; then
        warn "$name (pid $pid) still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile" 2>/dev/null || true
    log "$name stopped (pid $pid)"
}

# Cancel jobs first so that no job processes outlive slurmd (CI must not hang).
if [[ $KEEP_JOBS -eq 0 ]] && command -v squeue >/dev/null 2>&1 \
        && pid_alive "$CTLD_PIDFILE" slurmctld >/dev/null && ctld_ok; then
    mapfile -t jobs < <(squeue -h -o '%A' 2>/dev/null || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
        log "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
        scancel "${jobs[@]}" 2>/dev/null || true
        # shellcheck disable=SC2016
        wait_for "$STOP_TIMEOUT" jobs bash -c '[[ -z $(squeue -h -t R,CG,S,PD -o %A 2>/dev/null) ]]' \
            || warn "jobs still running/completing after ${STOP_TIMEOUT}s"
    fi
fi

# order: slurmd + slurmctld (in parallel), then slurmdbd (after slurmctld has
# flushed its accounting records), then MariaDB + munged (in parallel)
stop_pidfile slurmd    "$SLURMD_PIDFILE" slurmd &
stop_pidfile slurmctld "$CTLD_PIDFILE"   slurmctld &
wait
stop_pidfile slurmdbd  "$DBD_PIDFILE"    slurmdbd
stop_pidfile mariadbd  "$DB_PIDFILE"     mariadbd &
if [[ -e $RUN_DIR/munged.owned ]]; then
    stop_pidfile munged "$MUNGE_PIDFILE" munged
    rm -f "$RUN_DIR/munged.owned"
elif munge_ok; then
    log "munged not started by this kit -- left alone"
else
    log "munged not running"
fi
wait

if [[ $PURGE -eq 1 ]]; then
    for f in "$PET_SLURM_CONF_DIR/slurm.conf" "$PET_SLURM_CONF_DIR/slurmdbd.conf"; do
        if [[ -e $f ]] && grep -qxF "$MARKER" "$f"; then
            rm -f "$f"; log "removed $f"
        fi
    done
    if [[ -d $D ]]; then
        # refuse obviously dangerous values
        case $(realpath -m "$D") in
            /|/etc|/usr|/var|/home|/root|/tmp) die "refusing to delete PET_SLURM_DIR=$D" ;;
        esac
        rm -rf "$D"; log "removed $D"
    fi
fi
log "stopped"
