"""What a crash, a kill -9 or a second identical command must not lose or corrupt."""

import json

import pytest

from pet.checkpoint import load_checkpoint
from pet.errors import ConfigError
from pet.stages import run_stage
from pet.stages.lifecycle import run_lock, tracked_run
from tests.conftest import compose_cfg
from tests.test_trainer import TRAIN


def test_a_restart_from_scratch_never_replaces_a_better_best_checkpoint(demo_root, tmp_path, caplog):
    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_epoch=3", f"paths.run_dir={tmp_path}")
    first = run_stage(cfg)
    best = tmp_path / "checkpoint_best.pt"
    kept = best.read_bytes()
    # checkpoint_last.pt is corrupt: the error's advice is to move it aside and re-run
    (tmp_path / "checkpoint_last.pt").unlink()
    worse = compose_cfg(demo_root, *TRAIN, "trainer.max_update=1", f"paths.run_dir={tmp_path}")
    with caplog.at_level("WARNING"):
        again = run_stage(worse)
    assert "holds checkpoint_best.pt from an earlier run" in caplog.text
    assert best.read_bytes() == kept, "a worse model replaced checkpoint_best.pt"
    assert again.metric == first.metric == load_checkpoint(best)["trainer"]["best_valid_loss"]
    assert json.loads((tmp_path / "result.json").read_text())["metric"] == first.metric


def test_two_identical_commands_cannot_share_a_run_folder(tmp_path):
    cfg = compose_cfg(tmp_path, "stage=summary", f"paths.run_dir={tmp_path}/run")
    with run_lock(cfg):
        with pytest.raises(ConfigError, match="in use by another pet process"):
            with run_lock(cfg):
                pass
    with run_lock(cfg):  # released with the first
        pass


KILLED_MID_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from tests.conftest import compose_cfg
from pet.stages.lifecycle import tracked_run
cfg = compose_cfg({root!r}, "stage=summary", "tracking=mlflow", "tracking.uri={uri}", "paths.run_dir={root}/run")
with tracked_run(cfg) as tracker:
    print(tracker.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_left_running_by_kill_9_is_marked_killed(tmp_path):
    import subprocess
    import sys

    import mlflow

    from tests.conftest import REPO

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = KILLED_MID_RUN.format(repo=str(REPO), root=str(tmp_path), uri=uri)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    stale = proc.stdout.split()[-1]
    client = mlflow.MlflowClient(uri)
    assert client.get_run(stale).info.status == "RUNNING"
    cfg = compose_cfg(tmp_path, "stage=summary", "tracking=mlflow", f"tracking.uri={uri}", f"paths.run_dir={tmp_path}/run")
    with tracked_run(cfg) as tracker:
        fresh = tracker.run_id
    assert fresh != stale
    assert client.get_run(stale).info.status == "KILLED"
    assert client.get_run(fresh).info.status == "FINISHED"
    assert "config.yaml" in [a.path for a in client.list_artifacts(fresh)]


def test_a_re_run_pipeline_keeps_its_steps_under_one_parent_run(tmp_path):
    import mlflow

    from tests.test_cli import run_pet

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["stage=pipeline", "stage.steps=[{name:first,overrides:['stage=prepare']},{name:second,overrides:['stage=prepare']}]",
            "data.demo_train_size=60", "data.demo_valid_size=10", "data.demo_test_size=10", "data.bpe_merges=50", f"tracking.uri={uri}",
            f"paths.output_root={tmp_path}", "experiment_name=rerun"]
    for attempt in range(2):
        r = run_pet(*args)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        if attempt == 0:  # the second step is lost (as after a crash) and runs again on the re-run
            (next((tmp_path / "runs" / "pipeline").glob("*/second")) / "result.json").unlink()
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rerun").experiment_id])
    parents = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 3  # first, second, and second again
    assert parents[0].info.status == "FINISHED"
