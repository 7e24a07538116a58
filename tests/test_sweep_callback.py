"""One MLflow parent run per multirun: the Hydra callback, and a real `pet --multirun`."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from pet.sweep.callbacks import SweepCallback
from pet.sweep.tracking import child_runs, split_override
from pet.tracking import PARENT_FILE, read_parent
from tests.conftest import REPO


def multirun_cfg(root: Path, *overrides: str):
    """The config on_multirun_start receives (hydra node included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    import pet.cli  # noqa: F401  schema + resolvers

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return GlobalHydra.instance().config_loader().load_configuration(
            config_name="config", run_mode=RunMode.MULTIRUN,
            overrides=[f"paths.output_root={root}", "experiment_name=study", *overrides])


def fake_job(sweep: Path, lr: str, status: str, parent: str, uri: str) -> None:
    """What a sweep job leaves behind: its folder and a child run."""
    from omegaconf import OmegaConf

    from pet.tracking import make_tracker

    d = sweep / f"optim.lr={lr}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- stage=pretrain\n- optim.lr={lr}\n")
    t = make_tracker(OmegaConf.create({"backend": "mlflow", "uri": uri, "experiment": "study", "artifact_location": None}))
    t.start(run_name=f"lr{lr}", parent_run_id=parent, tags={"override.optim.lr": lr})
    t.end(status)
    if status == "FINISHED":
        (d / "result.json").write_text(json.dumps({"stage": "pretrain", "metric_name": "best_valid_loss", "metric": 3.0,
                                                   "metrics": {"best_valid_loss": 3.0, "parameters": 100}}))
    else:
        (d / "traceback.txt").write_text("Traceback ...\nValueError: boom\n")


def test_split_override_handles_prefixes():
    assert split_override("+a.b=1") == ("a.b", "1")
    assert split_override("++a=x=y") == ("a", "x=y")
    assert split_override("~a.b") == ("a.b", "<deleted>")


def test_parent_run_created_before_jobs_closed_finished_and_reused_on_relaunch(tmp_path):
    cfg = multirun_cfg(tmp_path, "stage=pretrain", "optim.lr=1e-3,2e-3", "trainer.seed=1,2")
    cb = SweepCallback()
    cb.on_multirun_start(config=cfg)
    sweep = tmp_path / "sweeps" / "pretrain"
    info = read_parent(sweep)
    assert info is not None and (sweep / PARENT_FILE).is_file()
    uri = info["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(info["run_id"])
    assert parent.info.status == "RUNNING"
    assert client.get_experiment(parent.info.experiment_id).name == "study"
    tags = parent.data.tags
    assert tags["sweep.param.optim.lr"] == "1e-3,2e-3" and tags["sweep.param.trainer.seed"] == "1,2"
    assert tags["override.stage"] == "pretrain" and tags["sweep.num_jobs"] == "4" and info["num_jobs"] == 4
    assert "optim.lr=1e-3,2e-3" in tags["sweep.overrides"]

    # submitit pickles the callback with every job: plain state, and jobs never close the parent
    clone = pickle.loads(pickle.dumps(cb))
    assert clone._closed and clone._info == cb._info

    fake_job(sweep, "0.001", "FINISHED", info["run_id"], uri)
    fake_job(sweep, "0.002", "FINISHED", info["run_id"], uri)
    cb.on_multirun_end(config=cfg)
    parent = client.get_run(info["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep_finished"] == 2 and parent.data.tags["sweep.end"] == "completed"
    assert (sweep / "report" / "report.md").is_file()
    assert {f.path for f in client.list_artifacts(info["run_id"], "report")} >= {"report/report.md", "report/report.csv"}

    # relaunching the same sweep reopens the same parent
    cb2 = SweepCallback(report_on_end=False)
    cb2.on_multirun_start(config=cfg)
    again = read_parent(sweep)
    assert again["run_id"] == info["run_id"] and again["launches"] == 2
    assert client.get_run(info["run_id"]).info.status == "RUNNING"
    cb2.on_multirun_end(config=cfg)
    assert client.get_run(info["run_id"]).info.status == "FINISHED"


def test_a_failed_child_or_an_aborted_multirun_fails_the_parent(tmp_path):
    cfg = multirun_cfg(tmp_path, "stage=pretrain", "optim.lr=1e-3,2e-3")
    cb = SweepCallback()
    cb.on_multirun_start(config=cfg)
    sweep = tmp_path / "sweeps" / "pretrain"
    info = read_parent(sweep)
    fake_job(sweep, "0.001", "FINISHED", info["run_id"], info["tracking_uri"])
    fake_job(sweep, "0.002", "FAILED", info["run_id"], info["tracking_uri"])
    cb._close_at_exit()  # Hydra skips on_multirun_end when a job fails; atexit closes the parent
    client = mlflow.MlflowClient(info["tracking_uri"])
    parent = client.get_run(info["run_id"])
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["sweep_failed"] == 1 and parent.data.tags["sweep.end"] == "multirun aborted"
    md = (sweep / "report" / "report.md").read_text()
    assert "FAILED" in md and "ValueError: boom" in md
    cb.on_multirun_end(config=cfg)  # already closed: no-op
    assert client.get_run(info["run_id"]).info.status == "FAILED"


def test_an_unreachable_tracking_server_stops_the_sweep_before_submission(tmp_path, caplog):
    # Hydra turns exceptions of callbacks into warnings; this one must stop the sweep
    cfg = multirun_cfg(tmp_path, "stage=pretrain", "tracking.uri=http://127.0.0.1:1", "optim.lr=1e-3,2e-3")
    with pytest.raises(SystemExit) as e:
        SweepCallback().on_multirun_start(config=cfg)
    assert e.value.code == 2
    assert "is not reachable" in caplog.text and "launchers/mlflow_server.sh" in caplog.text
    assert not (tmp_path / "sweeps" / "pretrain" / PARENT_FILE).exists()


def test_tracking_none_makes_no_parent(tmp_path):
    cfg = multirun_cfg(tmp_path, "stage=pretrain", "tracking=none", "optim.lr=1e-3,2e-3")
    cb = SweepCallback(report_on_end=False)
    cb.on_multirun_start(config=cfg)
    assert not (tmp_path / "sweeps" / "pretrain" / PARENT_FILE).exists()
    assert not (tmp_path / "mlflow.db").exists()
    cb.on_multirun_end(config=cfg)


def test_only_rank_0_of_a_torchrun_multirun_opens_the_parent(tmp_path, monkeypatch):
    cfg = multirun_cfg(tmp_path, "stage=pretrain", "optim.lr=1e-3,2e-3")
    monkeypatch.setenv("RANK", "1")
    cb = SweepCallback(report_on_end=False)
    cb.on_multirun_start(config=cfg)
    assert not (tmp_path / "sweeps" / "pretrain" / PARENT_FILE).exists()
    cb.on_multirun_end(config=cfg)
    monkeypatch.setenv("RANK", "0")
    main = SweepCallback(report_on_end=False)
    main.on_multirun_start(config=cfg)
    assert (tmp_path / "sweeps" / "pretrain" / PARENT_FILE).exists()
    main.on_multirun_end(config=cfg)


def test_multirun_links_children_and_records_a_failing_job(tmp_path):
    """`pet --multirun` (basic launcher), 2 cheap prepare jobs, the second fails
    inside its tracked run: both children under one parent, the parent FAILED,
    the failing child FAILED with its traceback, the report written."""
    env = {**os.environ, "PET_ROOT": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "pet", "--multirun", "stage=prepare", "data=demo", "data.demo_train_size=60",
         "data.demo_valid_size=10", "data.demo_test_size=10", "data.bpe_merges=30", "data.tgt_lang=en,de",
         f"paths.output_root={tmp_path}", "experiment_name=cb_e2e", "trainer.progress_bar=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]  # one job failed
    sweep = tmp_path / "sweeps" / "prepare"
    info = read_parent(sweep)
    assert info is not None, out[-3000:]
    client = mlflow.MlflowClient(info["tracking_uri"])
    children = child_runs(info["tracking_uri"], info["run_id"])
    by_lang = {c.data.tags["override.data.tgt_lang"]: c for c in children}
    assert sorted(by_lang) == ["de", "en"]
    assert by_lang["en"].info.status == "FINISHED" and by_lang["de"].info.status == "FAILED"
    assert by_lang["en"].data.tags["sweep.job_num"] == "0"
    assert "data.tgt_lang=en," in by_lang["en"].data.tags["sweep.job"]
    assert "traceback.txt" in {f.path for f in client.list_artifacts(by_lang["de"].info.run_id)}
    assert client.get_run(info["run_id"]).info.status == "FAILED"
    md = (sweep / "report" / "report.md").read_text()
    assert "1 COMPLETED, 1 FAILED" in md and "must be two different language codes" in md
