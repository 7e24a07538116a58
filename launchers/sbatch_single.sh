#!/usr/bin/env bash
# One pet run as one Slurm job (no Hydra launcher). Submit from the repository
# root; everything after the script name is passed to `pet`:
#   sbatch launchers/sbatch_single.sh stage=pretrain model=transformer_small data=iwslt14_shared
#   sbatch -p debug -c 2 -t 00:10:00 --mem=2G launchers/sbatch_single.sh stage=pretrain data=demo debug=fast
# (sbatch options on the command line override the #SBATCH lines below.)
#
# Time limit / preemption: Slurm sends SIGUSR1 to this script 120 s before the
# limit (--signal=B:USR1@120); the script forwards it to pet, which writes
# checkpoint_last.pt at the next update and requeues the job itself
# (`scontrol requeue`, allowed by --requeue). The requeued job runs this same
# command, lands in the same deterministic run folder
# (outputs/runs/<run_name>/<overrides>) and resumes from the checkpoint; a
# finished run is a no-op. Submitting the same command again by hand resumes too.
#
# Environment: PET_PYTHON (interpreter; default <submit dir>/.venv/bin/python,
# else python3), PET_OUTPUT_ROOT (where outputs/ goes; default <repo>/outputs).
#SBATCH --job-name=pet
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# GPU partitions: add  #SBATCH --gres=gpu:1  (and --partition=...).
set -uo pipefail

REPO="${PET_REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$REPO" || { echo "cannot cd to $REPO" >&2; exit 1; }
if [ -n "${PET_PYTHON:-}" ]; then PY="$PET_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY="$(command -v python3)"; fi

# Thread pools sized to the allocation (pet's trainer.num_threads=0 reads
# SLURM_CPUS_PER_TASK too); nothing pins a job on clusters without cgroups.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export MKL_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export PET_ROOT="${PET_ROOT:-$REPO}"

echo "[$(date '+%F %T')] job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname): $PY -m pet $*"

"$PY" -u -m pet "$@" &
child=$!
# B:USR1 reaches only this shell: hand it (and TERM) to pet, then keep waiting.
# shellcheck disable=SC2317  # called from the traps below
forward() { echo "[$(date '+%F %T')] got SIG$1, forwarding to pet (pid $child)"; kill -s "$1" "$child" 2>/dev/null; }
trap 'forward USR1' USR1
trap 'forward TERM' TERM
while :; do
  wait "$child"
  rc=$?
  # wait returns early (status > 128) when a trapped signal arrives; the child
  # is then still running.
  kill -0 "$child" 2>/dev/null || break
done
echo "[$(date '+%F %T')] pet exited with status $rc"
exit "$rc"
