"""pet.tracking.parent_run / finish_parent_run: the one parent-run record shared by sweeps and pipelines."""

from __future__ import annotations

import json

import mlflow
from omegaconf import OmegaConf

from pet.tracking import PARENT_FILE, create_parent_run, finish_parent_run, parent_run, read_parent


def tracking(tmp_path, backend: str = "mlflow"):
    return OmegaConf.create({"backend": backend, "uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "parents",
                             "artifact_location": None})


def test_created_recorded_reopened_and_finished(tmp_path):
    cfg = tracking(tmp_path)
    folder = tmp_path / "run"
    info = parent_run(cfg, folder, "pipeline:x", tags={"stage": "pipeline", "k": "1"}, record={"extra": [1, 2]})
    assert info is not None and read_parent(folder) == info
    assert info["launches"] == 1 and info["extra"] == [1, 2] and info["tracking_uri"] == cfg.uri
    client = mlflow.MlflowClient(cfg.uri)
    assert client.get_run(info["run_id"]).data.tags["k"] == "1"

    finish_parent_run(cfg, info["run_id"], "FAILED", metrics={"m": 2})
    assert client.get_run(info["run_id"]).info.status == "FAILED"

    again = parent_run(cfg, folder, "pipeline:x", tags={"k": "2"})
    assert again["run_id"] == info["run_id"] and again["launches"] == 2 and again["created"] == info["created"]
    run = client.get_run(info["run_id"])
    assert run.info.status == "RUNNING" and run.data.tags["k"] == "2" and run.data.metrics["m"] == 2

    finish_parent_run(cfg.uri, info["run_id"], tags={"end": "done"})  # the store's URI does as well as the config
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["end"] == "done"


def test_a_record_of_another_store_or_of_a_lost_run_gets_a_new_parent(tmp_path):
    cfg = tracking(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / PARENT_FILE).write_text(json.dumps({"run_id": "0" * 32}))  # this store has no such run
    first = parent_run(cfg, folder, "sweep:x")
    assert first["run_id"] != "0" * 32 and first["launches"] == 1

    (folder / PARENT_FILE).write_text(json.dumps({**first, "tracking_uri": "http://elsewhere:5000"}))
    second = parent_run(cfg, folder, "sweep:x")
    assert second["run_id"] != first["run_id"]

    (folder / PARENT_FILE).write_text(json.dumps({"run_id": second["run_id"]}))  # no store named: this one
    assert parent_run(cfg, folder, "sweep:x")["run_id"] == second["run_id"]


def test_tracking_none_opens_nothing(tmp_path):
    cfg = tracking(tmp_path, backend="none")
    assert parent_run(cfg, tmp_path / "run", "x") is None
    assert create_parent_run(cfg, "x") is None
    assert not (tmp_path / "run" / PARENT_FILE).exists() and not (tmp_path / "mlflow.db").exists()
    finish_parent_run(cfg, "abc")  # nothing to close
