#!/usr/bin/env bash
# Show the state of the private single-node Slurm: daemons, sinfo, squeue, recent sacct.
# Exit status 0 only if all daemons run and the node is usable.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rc=0
for spec in "munged:$MUNGE_PIDFILE" "mariadbd:$DB_PIDFILE" "slurmdbd:$DBD_PIDFILE" \
            "slurmctld:$CTLD_PIDFILE" "slurmd:$SLURMD_PIDFILE"; do
    name=${spec%%:*} pidfile=${spec#*:}
    if pid=$(pid_alive "$pidfile" "$name" 2>/dev/null); then
        printf '%-10s running (pid %s)\n' "$name" "$pid"
    elif [[ -e $pidfile && ! -r $pidfile ]] || { [[ ! -e $pidfile ]] && ! ls "$(dirname "$pidfile")" >/dev/null 2>&1; }; then
        printf '%-10s ? (pid file not readable; run as root)\n' "$name"
    else
        printf '%-10s NOT running\n' "$name"; rc=1
    fi
done
echo; sinfo -N -l 2>&1 || rc=1
node_idle || rc=1
echo; squeue 2>&1 || rc=1
echo; sacct -a -X -S now-1hour --format=JobID,JobName%20,User,State,ExitCode,Elapsed 2>&1 || rc=1
exit $rc
