"""A job killed mid-training (SIGKILL, or SIGTERM as Slurm sends on preemption)
and relaunched with the same command ends with exactly the parameters of a job
that was never interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pet.checkpoint import load_checkpoint
from tests.conftest import DEMO_DATA, REPO

TRAIN = [*DEMO_DATA, "stage=pretrain", "model=transformer_tiny", "model.encoder_embed_dim=32",
         "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
         "trainer.max_tokens=600", "optim.warmup_updates=10", "optim.lr=2e-3", "trainer.max_update=60",
         "trainer.save_interval_updates=5", "trainer.log_interval=10", "tracking=none",
         "trainer.progress_bar=none", "trainer.num_threads=1"]


def command(root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "pet", *TRAIN, f"paths.output_root={root}", f"paths.run_dir={run_dir}"]


def launch(root, run_dir) -> subprocess.Popen:
    env = {**os.environ, "PET_ROOT": str(REPO)}
    return subprocess.Popen(command(root, run_dir), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(root, run_dir) -> None:
    proc = launch(root, run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]


def wait_for_checkpoint(proc, path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.02)


def final_weights(run_dir: Path) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoint_last.pt")
    assert ckpt["trainer"]["finished"] and ckpt["trainer"]["num_updates"] == 60
    return ckpt["model"]


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    finish(demo_root, run_dir)
    return final_weights(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_and_relaunched_job_matches_uninterrupted_job(sig, demo_root, reference, tmp_path):
    proc = launch(demo_root, tmp_path)
    wait_for_checkpoint(proc, tmp_path / "checkpoint_last.pt")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        # checkpointed at the next update boundary and left cleanly
        assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
        assert "exiting after SIGTERM" in out
    interrupted_at = load_checkpoint(tmp_path / "checkpoint_last.pt")["trainer"]
    assert not interrupted_at["finished"] and interrupted_at["num_updates"] < 60
    finish(demo_root, tmp_path)
    resumed = final_weights(tmp_path)
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after {sig.name} + relaunch"


def test_hand_over_on_a_rank_that_got_no_signal_exits_cleanly():
    """Every rank stops when any rank was signalled; the others must not crash."""
    from pet.training.preemption import Preempted, PreemptionGuard

    with PreemptionGuard() as guard, pytest.raises(Preempted) as stop:
        guard.hand_over()
    assert stop.value.code == 0


def test_submitits_exit_is_a_preemption_and_a_failed_requeue_is_not_success(tmp_path, monkeypatch):
    from pet.training.preemption import Preempted, PreemptionGuard

    def submitit_handler(signum, frame):  # submitit checkpoints, requeues, then sys.exit(-1)
        sys.exit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with PreemptionGuard() as guard:
            guard._record(signal.SIGUSR2, None)
            with pytest.raises(Preempted) as stop:
                guard.hand_over()
        assert stop.value.code == -1
    finally:
        signal.signal(signal.SIGUSR2, previous)

    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\necho 'Invalid job id' >&2\nexit 1\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    with PreemptionGuard() as guard:
        guard._record(signal.SIGUSR1, None)
        with pytest.raises(Preempted) as stop:
            guard.hand_over()
    assert stop.value.code == 128 + signal.SIGUSR1


def test_pre_timeout_outside_training_requeues_once_and_exits(tmp_path, monkeypatch):
    """Under plain sbatch: the pre-timeout signal during evaluation, importance or a
    report requeues the job (default action would kill it unrequeued); inside
    training it checkpoints first and requeues once."""
    from pet.training.preemption import Preempted, PreemptionGuard, requeue_on_pre_timeout_outside_training

    calls = tmp_path / "calls"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        for s in before:
            signal.signal(s, signal.SIG_DFL)
        requeue_on_pre_timeout_outside_training()
        with pytest.raises(Preempted) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(1)
        assert stop.value.code == 0 and calls.read_text().splitlines() == ["requeue 42"]

        with PreemptionGuard() as guard:
            os.kill(os.getpid(), signal.SIGUSR1)  # recorded only: training checkpoints first
            time.sleep(0.1)
            assert guard.received == signal.SIGUSR1
            with pytest.raises(Preempted) as stop:
                guard.hand_over()
        assert stop.value.code == 0 and calls.read_text().splitlines() == ["requeue 42"] * 2
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
