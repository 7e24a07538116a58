"""Attaching the report's files to an MLflow run (the sweep's parent run)."""

from __future__ import annotations

import logging
from pathlib import Path

from pet.sweep.plots import PLOTS
from pet.sweep.tracking import check_reachable
from pet.tracking import mlflow_client

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "report.csv", *(f"{p.name}.png" for p in PLOTS))


def log_report_files(uri: str, run_id: str, out_dir: str | Path) -> None:
    """Attach the report's files found in ``out_dir`` to an MLflow run (under ``report/``)."""
    why = check_reachable(uri)
    if why:
        log.warning("not logging the report to MLflow: %s is not reachable (%s)", uri, why)
        return
    client = mlflow_client(uri)
    for name in REPORT_FILES:
        path = Path(out_dir) / name
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path="report")
    log.info("report logged to MLflow run %s (artifacts report/)", run_id)
