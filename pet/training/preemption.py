"""Checkpoint-then-leave on Slurm's pre-timeout / preemption signals.

Slurm sends a pre-timeout signal (SIGUSR1 with ``--signal=USR1@120`` in our
sbatch template; SIGUSR2 under submitit >= 1.5) and SIGTERM on preemption or
scancel. Acting inside the signal handler
would checkpoint a half-updated model, so the handler only records the signal;
the training loop checks at each update boundary, writes ``checkpoint_last.pt``
and then hands over: to submitit's own handler when one was installed (it
pickles the job and requeues it), else it requeues a Slurm job itself
(``scontrol requeue``) on SIGUSR1. Either way the process exits cleanly and the
relaunched job resumes from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any, Optional

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


class Preempted(SystemExit):
    """Raised after the checkpoint is written; exit code 0 when requeued."""


class PreemptionGuard:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _record(self, signum: int, frame: Any) -> None:
        if self.received is None:
            log.warning("received %s: checkpointing at the next update, then exiting", signal.Signals(signum).name)
        self.received = signum

    def hand_over(self) -> None:
        """Call once the checkpoint is on disk. Never returns."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        self._restore()
        if signum is None:
            # Another rank of this distributed job got the signal (every rank
            # stops together); that rank requeues the job.
            log.warning("exiting with the rank that received a preemption signal; re-run the same command to resume")
            raise Preempted(0)
        if callable(previous):
            # submitit's handler: requeues a checkpointable job and exits
            # (sys.exit): that is a preemption, not a failure of the stage.
            try:
                previous(signum, None)
            except SystemExit as e:
                raise Preempted(e.code) from None
        leave(signum)


def leave(signum: int) -> None:
    """Requeue a plain sbatch job on Slurm's pre-timeout signal, then exit
    (raises :class:`Preempted`). Under submitit, its own handler requeues."""
    requeued = False
    job = os.environ.get("SLURM_JOB_ID")
    pre_timeout = signum in (signal.SIGUSR1, signal.SIGUSR2)
    if pre_timeout and job and os.environ.get("SUBMITIT_EXECUTOR") is None:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        requeued = result.returncode == 0
        if not requeued:
            log.error("scontrol requeue %s failed: %s", job, result.stderr.strip())
    name = signal.Signals(signum).name
    log.warning("exiting after %s%s; re-run the same command to resume", name, " (requeued)" if requeued else "")
    # Exit 0 only when the job goes on (requeued) or when a pre-timeout
    # notice came outside Slurm; a failed requeue must not look COMPLETED.
    raise Preempted(0 if requeued or (pre_timeout and not job) else 128 + signum)


def requeue_on_pre_timeout_outside_training() -> None:
    """Under plain sbatch, the pre-timeout signal may come while no training
    loop listens (data preparation, importance, removal, evaluation, reports),
    where its default action would kill the job unrequeued: requeue and exit
    at once instead (every stage resumes from its last checkpoint). Training
    installs its own handler over this one (checkpoint first, then this)."""
    if not os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_EXECUTOR"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, lambda signum, frame: leave(signum))
