"""A stage's life around its work: one process per run folder, one tracking
run per job (closed KILLED/FAILED/FINISHED as it ends), and where it left its work."""

from __future__ import annotations

import contextlib
import fcntl  # POSIX; pet's run folders are on Linux/macOS filesystems
import json
import logging
import os
import socket
import traceback
from pathlib import Path
from typing import Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from pet.data.fileio import atomic_write_text
from pet.errors import ConfigError
from pet.runtime import is_main_process
from pet.stages.common import StageResult, resolved_config, run_dir
from pet.sweep.tracking import job_tracking_context
from pet.tracking import NullTracker, make_tracker
from pet.training.preemption import Preempted

log = logging.getLogger(__name__)

LOCK_FILE = ".pet.lock"
RUN_ID_FILE = "mlflow_run.json"


@contextlib.contextmanager
def run_lock(cfg: DictConfig) -> Iterator[None]:
    """One process per run folder: a second identical command would train on
    and interleave its logs with the first. Released when the process ends, so
    a killed job leaves no stale lock."""
    if not is_main_process():
        yield
        return
    rd = run_dir(cfg)
    with open(rd / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(
                f"{rd} is in use by another pet process ({holder}); wait for it to finish, "
                "or give this run its own folder (paths.run_dir=...)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _close_stale_run(tracker: NullTracker, rd: Path, resume_run_id: Optional[str]) -> None:
    """A run this folder started before, left RUNNING by a process that was
    killed (kill -9: no handler ran) and not being resumed now, is marked KILLED."""
    path = rd / RUN_ID_FILE
    if not path.is_file():
        return
    with contextlib.suppress(ValueError, OSError):
        stale = json.loads(path.read_text()).get("run_id")
        if stale and stale != resume_run_id:
            tracker.close_if_running(stale, "KILLED")


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, resume_run_id: Optional[str] = None) -> Iterator[NullTracker]:
    """One tracking run per job (rank 0 only). A resumed job re-attaches to its
    run id and does not log params again; a failing job is marked FAILED with its traceback."""
    main = is_main_process()
    tracker = make_tracker(cfg.tracking, enabled=main)
    # In a multirun job: the sweep's parent run (<sweep dir>/mlflow_parent.json)
    # unless tracking.parent_run_id is set; and the job's overrides as tags.
    parent_run_id, job_tags = job_tracking_context(cfg, enabled=main)
    tags = {"stage": cfg.stage.name, "model": cfg.model.name, "data": cfg.data.name, **job_tags, **dict(cfg.tracking.tags)}
    run_id = tracker.start(
        run_id=resume_run_id,
        run_name=cfg.tracking.run_name or f"{cfg.stage.name}:{cfg.model.name}:{cfg.data.name}",
        parent_run_id=parent_run_id,
        tags=tags,
    )
    if run_id and main:
        rd = run_dir(cfg)
        _close_stale_run(tracker, rd, resume_run_id)
        atomic_write_text(rd / RUN_ID_FILE, json.dumps({"run_id": run_id}))
    if run_id and not resume_run_id:
        tracker.log_params(resolved_config(cfg))
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    try:
        yield tracker
    except BaseException as e:
        interrupted = isinstance(e, (KeyboardInterrupt, Preempted))
        if not interrupted:
            with contextlib.suppress(Exception):
                rd = run_dir(cfg)
                atomic_write_text(rd / "traceback.txt", traceback.format_exc())
                tracker.log_artifact(rd / "traceback.txt")
        # A preempted run is KILLED, not FAILED: the requeued job re-attaches to it.
        tracker.end("KILLED" if interrupted else "FAILED")
        raise
    tracker.end("FINISHED")
    if run_id:
        log.info("tracked in %s (run %s)", tracker.where(), run_id)


def announce(cfg: DictConfig, result: StageResult) -> None:
    """Say where a finished stage left its work, and point ``latest`` at it.

    ``<output_root>/runs/<run_name>/latest`` links the stage's newest run
    folder, so ``init_from=outputs/runs/pretrain/latest/checkpoint_best.pt``
    finds a model without copying its folder name.
    """
    if not is_main_process():
        return
    rd = Path(cfg.paths.run_dir).resolve()
    runs = (Path(cfg.paths.output_root) / "runs" / str(cfg.run_name)).resolve()
    if rd.parent == runs and rd.is_dir():
        link = runs / "latest"
        tmp = runs / f".latest-{os.getpid()}"
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(rd.name)
            os.replace(tmp, link)
    print(f"\n{result.stage} finished: {result.metric_name} = {result.metric}\n  run folder: {rd}", flush=True)
    if result.checkpoint:
        print(f"  checkpoint: {result.checkpoint}", flush=True)
