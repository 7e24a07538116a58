"""Run pet stages for the benchmarks: one ``python -m pet`` process per stage
(and, for the work a benchmark does in its own process, the same config).

A stage in its own process is exactly what a user types, keeps its thread
count to itself (so two 1-thread stages can share 2 cores; on small CPUs that
trains more tokens per second than one 2-thread process), and leaves a
``stage.log`` beside its ``result.json``. A stage whose ``result.json`` exists
is skipped, so a benchmark that stopped half-way resumes where it was.

:func:`stop_running_stages` ends a benchmark cleanly: every live stage gets
SIGTERM, on which a training stage writes ``checkpoint_last.pt`` at its next
update and exits (so a resumed run loses no updates), and no new stage starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
stopping = threading.Event()
_say_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: print() writes the text and its newline separately,
    so the lines of stages running in threads could run into each other."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class StageStopped(SystemExit):
    """A stage ended by :func:`stop_running_stages` (or never started after it): not a failure."""


def stop_running_stages(signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to every running stage and refuse to start new ones."""
    stopping.set()
    with _live_lock:
        for proc in _live:
            proc.send_signal(signum)


def run_pet_stage(name: str, run_dir: Path, overrides: list[str], threads: int) -> dict[str, Any]:
    """``python -m pet <overrides> paths.run_dir=<run_dir>`` with ``threads``
    CPU threads; returns its result.json (plus ``wall_s`` when it ran now).
    Exits the benchmark with the log's tail if the stage fails."""
    result = run_dir / "result.json"
    if result.exists():
        say(f"[skip] {name}: {result}")
        return json.loads(result.read_text())
    if stopping.is_set():
        raise StageStopped(f"{name}: not started (stopping)")
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pet", *overrides, f"trainer.num_threads={threads}", f"paths.run_dir={run_dir}"]
    say(f"[run ] {name}: {' '.join(cmd[3:])}")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with open(run_dir / "stage.log", "a") as log:  # a resumed stage adds to its log
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        with _live_lock:
            _live.add(proc)
            if stopping.is_set():  # stop_running_stages ran between the check above and now
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait()
        finally:
            with _live_lock:
                _live.discard(proc)
    seconds = time.perf_counter() - started
    if stopping.is_set() and not result.exists():
        raise StageStopped(f"{name} stopped after {seconds:.0f}s (exit {proc.returncode}); run again to resume")
    if proc.returncode != 0:
        tail = (run_dir / "stage.log").read_text()[-3000:]
        sys.exit(f"{name} failed ({proc.returncode}) after {seconds:.0f}s; see {run_dir / 'stage.log'}\n{tail}")
    say(f"[done] {name} in {seconds:.0f}s")
    return {**json.loads(result.read_text()), "wall_s": seconds}


def stage_threads(jobs: int, threads: int) -> int:
    """Threads of one training/evaluation process: all of them, or one each when ``jobs`` run at once."""
    return 1 if jobs > 1 else threads


def compose(overrides: list[str]):
    """The validated config ``python -m pet <overrides>`` would run with, for in-process benchmark work."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import pet.cli  # noqa: F401  registers the structured schema
    from pet.config.validate import validate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg
