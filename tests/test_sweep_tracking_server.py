"""8 concurrent jobs logging to one MLflow tracking server: 8 complete runs, none lost.

The server is started with launchers/mlflow_server.sh (SQLite store in a temp
folder, a free port on 127.0.0.1, bounded wait for /health) and always stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO

SERVER = REPO / "launchers" / "mlflow_server.sh"
N_JOBS = 8
N_STEPS = 10  # x 2 metrics = 20 values per run

WORKER = r"""
import os, sys, time
from omegaconf import OmegaConf
from pet.tracking import make_tracker

uri, parent, idx, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cfg = OmegaConf.create({"backend": "mlflow", "uri": uri, "experiment": "concurrency", "artifact_location": None})
t = make_tracker(cfg)  # imports done; now wait so that all jobs hit the server together
open(go + f".ready{idx}", "w").close()
deadline = time.time() + 60
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
run_id = t.start(run_name=f"job{idx}", parent_run_id=parent, tags={"override.trainer.seed": str(idx)})
t.log_params({"trainer": {"seed": idx}, "optim": {"lr": 1e-3 * (idx + 1)}, "model": {"name": "tiny"}})
for step in range(N_STEPS):
    t.log_metrics({"train_loss": 10.0 / (step + 1) + idx, "valid_loss": 9.0 / (step + 1) + idx}, step=step)
t.end("FINISHED")
print(run_id)
""".replace("N_STEPS", str(N_STEPS))


@contextlib.contextmanager
def mlflow_server(directory: Path, timeout_s: int = 90) -> Iterator[str]:
    """A tracking server for the test; yields its URI, skips if it cannot start."""
    env = {**os.environ, "PET_MLFLOW_TIMEOUT": str(timeout_s)}
    try:
        r = subprocess.run(["bash", str(SERVER), "start", "--dir", str(directory), "--port", "auto"],
                           capture_output=True, text=True, timeout=timeout_s + 30, env=env)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SERVER), "stop", "--dir", str(directory)], capture_output=True, timeout=60)
        pytest.skip(f"mlflow server did not start within {timeout_s + 30}s")
    try:
        if r.returncode != 0:
            pytest.skip(f"mlflow server could not start: {(r.stdout + r.stderr).strip()[-800:]}")
        uri = next(line.split("=", 1)[1] for line in r.stdout.splitlines() if line.startswith("tracking.uri="))
        yield uri
    finally:
        subprocess.run(["bash", str(SERVER), "stop", "--dir", str(directory)], capture_output=True, timeout=60)


def test_eight_concurrent_jobs_on_one_tracking_server(tmp_path):
    from omegaconf import OmegaConf

    from pet.sweep.tracking import child_runs
    from pet.tracking import create_parent_run

    t0 = time.time()
    with mlflow_server(tmp_path / "server") as uri:
        import mlflow

        cfg = OmegaConf.create({"backend": "mlflow", "uri": uri, "experiment": "concurrency", "artifact_location": None})
        parent = create_parent_run(cfg, "sweep:concurrency", tags={"sweep": "true"})
        go = tmp_path / "go"
        env = {**os.environ, "PET_ROOT": str(REPO)}
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, uri, parent, str(i), str(go)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for i in range(N_JOBS)
        ]
        try:
            # release them together once all have imported MLflow (bounded)
            deadline = time.time() + 60
            while time.time() < deadline and sum((tmp_path / f"go.ready{i}").exists() for i in range(N_JOBS)) < N_JOBS:
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                time.sleep(0.1)
            go.write_text("go")
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-2000:]
        run_ids = {out.strip().splitlines()[-1] for out, _ in outs}
        assert len(run_ids) == N_JOBS

        children = child_runs(uri, parent)
        assert {c.info.run_id for c in children} == run_ids
        assert all(c.info.status == "FINISHED" for c in children)
        client = mlflow.MlflowClient(uri)
        for c in children:
            idx = int(c.data.tags["override.trainer.seed"])
            assert c.data.params["trainer.seed"] == str(idx) and len(c.data.params) == 3
            for key in ("train_loss", "valid_loss"):
                hist = client.get_metric_history(c.info.run_id, key)
                assert sorted(m.step for m in hist) == list(range(N_STEPS)), (c.info.run_id, key)
            assert c.data.metrics["train_loss"] == pytest.approx(10.0 / N_STEPS + idx)
    print(f"8 concurrent jobs: {N_JOBS} FINISHED runs, {N_JOBS * N_STEPS * 2} metric values, {time.time() - t0:.1f}s")
