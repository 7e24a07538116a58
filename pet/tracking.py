"""Experiment tracking behind one small interface (MLflow or nothing).

The run id is stored in each checkpoint: a resumed job re-attaches to its run
and does not log params again (MLflow refuses to change a logged param).
Parent runs group a sweep's jobs or a pipeline's steps (:func:`parent_run`,
:func:`finish_parent_run`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from pet.data.fileio import atomic_write_text

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def absolute_uri(uri: str) -> str:
    """sqlite:///relative/path -> sqlite:////absolute/path (jobs may change cwd)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


class NullTracker:
    run_id: Optional[str] = None

    def start(self, **_: Any) -> Optional[str]:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_text(self, text: str, name: str) -> None: ...
    def close_if_running(self, run_id: str, status: str = "KILLED") -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...

    def where(self) -> str:
        return "tracking disabled"


class MlflowTracker(NullTracker):
    def __init__(self, uri: str, experiment: str, artifact_location: Optional[str] = None):
        import mlflow  # noqa: PLC0415 - heavy; runs with tracking=none never import it

        self._mlflow = mlflow
        self.uri = absolute_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if artifact_location:
                location = Path(artifact_location).resolve().as_uri()
            try:
                exp_id = client.create_experiment(experiment, artifact_location=location)
            except Exception:  # created concurrently by a sibling job
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.run_id = None

    def start(
        self,
        run_id: Optional[str] = None,
        run_name: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        tags: Optional[Mapping[str, str]] = None,
    ) -> str:
        mlflow = self._mlflow
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = {k: str(v)[:MAX_PARAM_LEN] for k, v in flatten(params).items()}
        items = list(clean.items())
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if Path(path).exists():
            self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_text(self, text: str, name: str) -> None:
        """``text`` as the artifact ``name`` of the active run (e.g. the resolved config)."""
        self._mlflow.log_text(text, name)

    def close_if_running(self, run_id: str, status: str = "KILLED") -> None:
        client = self._mlflow.MlflowClient()
        try:
            run = client.get_run(run_id)
        except Exception:  # deleted, or from another store: nothing to close
            return
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status=status)
            log.warning("MLflow run %s was left RUNNING by a killed process; marked %s", run_id, status)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self._mlflow.end_run(status=status)

    def where(self) -> str:
        return f"MLflow store {self.uri} (view: mlflow ui --backend-store-uri {self.uri})"


def make_tracker(cfg: Any, enabled: bool = True) -> NullTracker:
    """``enabled`` is False on non-zero ranks of a distributed job."""
    if not enabled or cfg.backend == "none":
        return NullTracker()
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # A dead tracking server should fail a job in seconds, not after MLflow's
    # default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return MlflowTracker(cfg.uri, cfg.experiment, cfg.artifact_location)


# ------------------------------------------------------------ parent runs
#
# A parent run groups the runs started from one folder: a sweep's jobs (the
# sweep dir) or a pipeline's steps (the pipeline's run dir). The folder's
# mlflow_parent.json records it, so a relaunch reopens the same parent instead
# of starting a second one.

PARENT_FILE = "mlflow_parent.json"


def mlflow_client(uri: str) -> Any:
    """An MLflow client of the store at ``uri`` (it leaves the process's active run alone)."""
    import mlflow  # noqa: PLC0415 - heavy; runs with tracking=none never import it

    return mlflow.MlflowClient(tracking_uri=uri)


def read_parent(folder: str | Path) -> Optional[dict[str, Any]]:
    """The parent run recorded in ``<folder>/mlflow_parent.json``, or None."""
    path = Path(folder) / PARENT_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable %s (%s)", path, e)
        return None
    return info if isinstance(info, dict) and info.get("run_id") else None


def write_parent(folder: str | Path, info: Mapping[str, Any]) -> Path:
    path = Path(folder) / PARENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dict(info), indent=2, sort_keys=True) + "\n")
    return path


def create_parent_run(cfg: Any, run_name: str, tags: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """A run that groups child jobs (pipeline steps, sweep jobs) without being
    the active run of this process, so children can start their own."""
    if cfg.backend == "none":
        return None
    tracker = MlflowTracker(cfg.uri, cfg.experiment, cfg.artifact_location)
    client = tracker._mlflow.MlflowClient()
    run = client.create_run(tracker.experiment_id, run_name=run_name, tags=dict(tags or {}))
    return run.info.run_id


def parent_run(
    cfg: Any,
    folder: str | Path,
    run_name: str,
    tags: Optional[Mapping[str, str]] = None,
    record: Optional[Mapping[str, Any]] = None,
) -> Optional[dict[str, Any]]:
    """Open the parent run of ``folder`` and record it in ``<folder>/mlflow_parent.json``.

    The run recorded there is reopened (status RUNNING again, ``tags`` set anew)
    when it belongs to this tracking store and the store still has it, so every
    launch's children stay under one parent; otherwise a new run is created with
    ``tags``. The file gets the run id, the store, the experiment, the run name,
    how many launches opened the run, when it was created, and ``record``.
    Returns what was written; None with tracking=none.
    """
    if cfg.backend == "none":
        return None
    uri = absolute_uri(cfg.uri)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old = read_parent(folder)
    run_id, launches = None, 1
    # a record without tracking_uri names a run of this store
    if old and old.get("tracking_uri", uri) == uri:
        try:
            mlflow_client(uri).update_run(old["run_id"], status="RUNNING")
            run_id = old["run_id"]
            launches = int(old.get("launches") or 1) + 1
            log.info("reopened MLflow parent run %s (recorded in %s)", run_id, folder / PARENT_FILE)
        except Exception as e:
            log.warning("parent run %s from %s not found in %s (%s); creating a new one",
                        old["run_id"], folder / PARENT_FILE, uri, e)
    if run_id is None:
        run_id = create_parent_run(cfg, run_name=run_name, tags=tags)
    else:
        client = mlflow_client(uri)
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
    info = {
        "run_id": run_id,
        "tracking_uri": uri,
        "experiment": cfg.experiment,
        "experiment_id": mlflow_client(uri).get_run(run_id).info.experiment_id,
        "run_name": run_name,
        **dict(record or {}),
        "launches": launches,
        "created": (old or {}).get("created") if launches > 1 else None,
    }
    info["created"] = info["created"] or time.strftime("%Y-%m-%dT%H:%M:%S")
    write_parent(folder, info)
    return info


def finish_parent_run(
    tracking: Any,
    run_id: Optional[str],
    status: str = "FINISHED",
    metrics: Optional[Mapping[str, float]] = None,
    tags: Optional[Mapping[str, str]] = None,
) -> None:
    """Log ``metrics`` and ``tags`` to a parent run, then mark it ``status``.

    ``tracking``: the tracking config the run was opened with, or its store's
    URI. Does nothing without a run id or with tracking=none.
    """
    if run_id is None:
        return
    if isinstance(tracking, str):
        uri = tracking
    elif tracking.backend == "none":
        return
    else:
        uri = absolute_uri(tracking.uri)
    client = mlflow_client(uri)
    for k, v in (metrics or {}).items():
        client.log_metric(run_id, k, float(v))
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, v)
    client.set_terminated(run_id, status=status)
