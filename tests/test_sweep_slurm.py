"""A real `pet --multirun launcher=slurm` sweep on the local single-node Slurm kit.

Starts launchers/slurm_local (root needed; CI's .ci/run installs it and this
test skips with the reason where that failed), an MLflow tracking server, then
sweeps 4 tiny pretrain jobs as one Slurm job array and checks: every task
COMPLETED in sacct, one MLflow parent run with exactly those 4 FINISHED
children, and the sweep report. Also runs launchers/sbatch_single.sh once.
Slurm is stopped again if this test started it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_sweep_tracking_server import mlflow_server

KIT = REPO / "launchers" / "slurm_local"
DATA = ["data=demo", "data.demo_train_size=300", "data.demo_valid_size=30", "data.demo_test_size=30",
        "data.bpe_merges=150"]
TINY = ["model.encoder_embed_dim=32", "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64",
        "model.decoder_ffn_dim=64", "trainer.max_epoch=1", "trainer.progress_bar=none"]

pytestmark = pytest.mark.slow


def _run(cmd, timeout, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _kit_ok() -> bool:
    try:
        return _run(["bash", str(KIT / "status.sh")], 60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def slurm():
    """The local Slurm, started for this module (and stopped after) unless it already ran."""
    missing = [b for b in ("sbatch", "sacct", "squeue", "slurmctld", "slurmd", "munged") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm kit not installed ({', '.join(missing)} missing); "
                    "run `sudo launchers/slurm_local/install.sh` (CI's .ci/run tries it)")
    started = False
    if not _kit_ok():
        if os.geteuid() != 0:
            pytest.skip("local Slurm is not running and starting it needs root: sudo launchers/slurm_local/start.sh")
        try:
            r = _run(["bash", str(KIT / "start.sh")], 240)
        except subprocess.TimeoutExpired:
            _run(["bash", str(KIT / "stop.sh")], 120)
            pytest.skip("launchers/slurm_local/start.sh did not finish within 240 s")
        if r.returncode != 0:
            _run(["bash", str(KIT / "stop.sh")], 120)
            pytest.skip(f"launchers/slurm_local/start.sh failed: {(r.stdout + r.stderr).strip()[-1200:]}")
        started = True
    try:
        yield
    finally:
        if started:
            _run(["bash", str(KIT / "stop.sh")], 120)


def sacct_states(job_ids: list[str], expect: int, timeout_s: float = 90) -> dict[str, str]:
    """JobID -> State for the allocations of these jobs, polled until `expect`
    rows are in a final state (sacct lags squeue by a few seconds)."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}
    deadline = time.time() + timeout_s
    states: dict[str, str] = {}
    while time.time() < deadline:
        r = _run(["sacct", "-j", ",".join(job_ids), "-n", "-P", "-X", "--format=JobID,State"], 30)
        states = {}
        for line in r.stdout.splitlines():
            if "|" in line:
                jid, state = line.split("|", 1)
                states[jid] = state.split()[0]
        if len(states) >= expect and all(s in final for s in states.values()):
            return states
        time.sleep(2)
    return states


def test_slurm_sweep_sacct_mlflow_and_report(slurm, tmp_path):
    t0 = time.time()
    out_root = tmp_path / "out"
    env = {**os.environ, "PET_ROOT": str(REPO)}
    # Prepare the corpus once so the 4 jobs only read it.
    r = _run([sys.executable, "-m", "pet", "stage=prepare", *DATA, f"paths.output_root={out_root}", "tracking=none"],
             300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    with mlflow_server(tmp_path / "mlflow") as uri:
        t_sweep = time.time()
        r = _run(
            [sys.executable, "-m", "pet", "--multirun", "launcher=slurm", "stage=pretrain", *DATA, *TINY,
             "optim.lr=1e-3,2e-3", "trainer.seed=1,2", f"paths.output_root={out_root}", f"tracking.uri={uri}",
             "experiment_name=slurm_sweep", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
             "hydra.launcher.timeout_min=10", "hydra.launcher.mem_gb=1", "hydra.launcher.array_parallelism=4"],
            420, cwd=tmp_path, env=env,
        )
        sweep_s = time.time() - t_sweep
        log = r.stdout + r.stderr
        sweep = out_root / "sweeps" / "pretrain"
        assert r.returncode == 0, log[-4000:]

        # --- Slurm: one array of 4 tasks, all COMPLETED, run by this venv's python
        # submitit folders: <array id> (the sbatch script) and <array id>_<task> per job
        task_dirs = sorted(d.name for d in (sweep / ".submitit").iterdir() if d.is_dir() and "_" in d.name)
        array_ids = sorted({name.split("_")[0] for name in task_dirs})
        assert len(task_dirs) == 4 and len(array_ids) == 1, task_dirs
        states = sacct_states(array_ids, expect=4)
        assert len(states) == 4 and set(states.values()) == {"COMPLETED"}, states
        submission = next((sweep / ".submitit").rglob("*_submission.sh")).read_text()
        assert sys.executable in submission and "#SBATCH --partition=debug" in submission

        # --- MLflow: one parent, exactly those 4 children, all FINISHED
        from pet.sweep.tracking import child_runs
        from pet.tracking import read_parent

        info = read_parent(sweep)
        assert info is not None and info["tracking_uri"] == uri
        import mlflow

        client = mlflow.MlflowClient(uri)
        parent = client.get_run(info["run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["sweep.launcher"] == "submitit_slurm"
        children = child_runs(uri, info["run_id"])
        assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
        combos = sorted((c.data.tags["override.optim.lr"], c.data.tags["override.trainer.seed"]) for c in children)
        assert combos == [("0.001", "1"), ("0.001", "2"), ("0.002", "1"), ("0.002", "2")]
        exp = client.get_experiment(parent.info.experiment_id)
        assert exp.name == "slurm_sweep"
        all_runs = client.search_runs([exp.experiment_id])
        assert len(all_runs) == 5  # the parent and its 4 children, nothing else

        # --- the report (latency timed by the report: these jobs measure none)
        r = _run([sys.executable, "-m", "pet", "stage=report", f"report.sweep_dir={sweep}", "report.measure=true",
                  "report.latency_repeats=1", "report.latency_length=8", f"paths.output_root={out_root}",
                  f"tracking.uri={uri}", "trainer.num_threads=1"], 300, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        rep = sweep / "report"
        for name in ("report.md", "report.csv", "bleu_vs_params.png", "bleu_vs_latency.png"):
            assert (rep / name).is_file(), name
        rows = list(csv.DictReader(io.StringIO((rep / "report.csv").read_text())))
        assert len(rows) == 4 and {row["status"] for row in rows} == {"COMPLETED"}
        assert all(float(row["latency_ms_b1"]) > 0 and int(row["parameters"]) > 0 for row in rows)
        assert "4 COMPLETED" in (rep / "report.md").read_text()
        logged = {f.path for f in client.list_artifacts(info["run_id"], "report")}
        assert {"report/report.md", "report/bleu_vs_latency.png"} <= logged

    summary = {
        "array": array_ids[0], "sacct": states, "children": len(children), "sweep_s": round(sweep_s, 1),
        "total_s": round(time.time() - t0, 1),
    }
    print("\nslurm sweep:", json.dumps(summary))
    print((rep / "report.md").read_text())


def test_sbatch_single_template_runs_one_job(slurm, tmp_path):
    out = tmp_path / "slurm-%j.out"
    r = _run(["sbatch", "--parsable", "-p", "debug", "-c", "1", "-t", "5", "--mem=1G", f"--output={out}",
              str(REPO / "launchers" / "sbatch_single.sh"), "stage=summary", "model=transformer_tiny",
              "data.src_vocab_size=100", "data.tgt_vocab_size=100", f"paths.output_root={tmp_path}", "tracking=none"],
             60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    states = sacct_states([job], expect=1, timeout_s=240)
    text = Path(str(out).replace("%j", job)).read_text() if Path(str(out).replace("%j", job)).exists() else ""
    assert states.get(job) == "COMPLETED", (states, text[-2000:])
    assert ".venv/bin/python -m pet stage=summary" in text and "pet exited with status 0" in text
