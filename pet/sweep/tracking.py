"""The MLflow side of a sweep: one parent run per multirun, children linked to it.

The submitting process (:class:`pet.sweep.callbacks.SweepCallback`) creates the
experiment and the parent run before any job is submitted and writes
``<sweep dir>/mlflow_parent.json``. Each job's :func:`pet.stages.common.tracked_run`
calls :func:`job_tracking_context`, which reads that file (the sweep dir comes
from Hydra's own config of the job) and returns the parent id plus the job's
overrides as ``override.<key>`` tags. A relaunched sweep (same command, so the
same deterministic sweep dir) reuses its parent run (:func:`pet.tracking.parent_run`
keeps that record; a pipeline's steps are grouped the same way).

Nothing here imports MLflow at module level: jobs are pickled and this module is
imported by every job.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from pet.errors import ConfigError
from pet.tracking import PARENT_FILE, absolute_uri, finish_parent_run, mlflow_client, parent_run, read_parent

log = logging.getLogger(__name__)

MAX_TAG_LEN = 5000  # MLflow accepts 8000 characters per tag value; keep a margin
TERMINAL_OK = {"FINISHED"}
TERMINAL_BAD = {"FAILED", "KILLED"}


# ----------------------------------------------------------------- overrides


def split_override(override: str) -> tuple[str, str]:
    """``+a.b=1`` / ``++a.b=1`` / ``a.b=1`` -> ("a.b", "1"); ``~a.b`` -> ("a.b", "<deleted>")."""
    text = override.strip()
    if text.startswith("~"):
        key = text[1:].split("=", 1)[0]
        return key, "<deleted>"
    text = text.lstrip("+")
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def override_tags(overrides: Iterable[str], prefix: str = "override.") -> dict[str, str]:
    tags = {}
    for o in overrides:
        key, value = split_override(str(o))
        if key:
            tags[f"{prefix}{key}"] = value[:MAX_TAG_LEN]
    return tags


def parse_sweep(overrides: list[str]) -> tuple[Optional[list[list[str]]], dict[str, str]]:
    """(the jobs Hydra's basic sweeper makes of these overrides, the swept keys
    -> their sweep expression); (None, {}) for syntax only another sweeper knows."""
    try:
        # private Hydra API: a Hydra without it only costs this information
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: PLC0415 - private Hydra API
        from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415 - private Hydra API

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        swept = {o.get_key_element(): split_override(o.input_line)[1] for o in parsed if o.is_sweep_override()}
        batches = BasicSweeper.split_arguments(parsed, None)
        return [list(job) for batch in batches for job in batch], swept
    except Exception as e:  # informative only
        log.debug("could not expand the sweep %s: %s", overrides, e)
        return None, {}


# ------------------------------------------------------------------ jobs


def job_tracking_context(cfg: Any, enabled: bool = True) -> tuple[Optional[str], dict[str, str]]:
    """(parent run id, extra tags) for the tracking run of this job.

    ``cfg.tracking.parent_run_id`` wins when set (pipeline steps). Otherwise, in a
    Hydra multirun job, the parent recorded in ``<sweep dir>/mlflow_parent.json``
    -- if it lives in the same tracking store as this job's. Tags: the job's own
    overrides (``override.<key>``) and, in a sweep, ``sweep.job`` (its subdir)
    and ``sweep.job_num``.
    """
    parent = cfg.tracking.parent_run_id or None
    tags: dict[str, str] = {}
    if not enabled or cfg.tracking.backend == "none":
        return parent, tags
    try:
        if not HydraConfig.initialized():
            return parent, tags
        hc = HydraConfig.get()
        tags.update(override_tags(list(hc.overrides.task)))
        if hc.mode != RunMode.MULTIRUN:
            return parent, tags
        sweep_dir = Path(str(hc.sweep.dir))
        tags["sweep.job"] = str(hc.job.override_dirname)[:MAX_TAG_LEN] or "(no overrides)"
        if hc.job.get("num") is not None:
            tags["sweep.job_num"] = str(hc.job.num)
    except Exception as e:  # never let bookkeeping break a training job
        log.warning("could not read the Hydra job context for tracking tags: %s", e)
        return parent, tags
    if parent is None:
        info = read_parent(sweep_dir)
        if info is None:
            log.info("no %s in %s: this sweep job has no MLflow parent run", PARENT_FILE, sweep_dir)
        else:
            mine = absolute_uri(cfg.tracking.uri)
            if info.get("tracking_uri") == mine:
                parent = info["run_id"]
                tags["sweep.dir"] = str(sweep_dir)
            else:
                log.warning(
                    "sweep parent run %s lives in %s but this job tracks to %s; not linking it "
                    "(pass the same tracking.uri to the whole sweep)", info["run_id"], info.get("tracking_uri"), mine,
                )
    return parent, tags


# --------------------------------------------------------------- MLflow side


def check_reachable(uri: str, timeout_s: float = 5.0) -> Optional[str]:
    """None if an http(s) tracking server answers ``/health``, else why not."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def start_sweep_parent(
    tracking_cfg: Any,
    sweep_dir: str | Path,
    run_name: str,
    overrides: list[str],
    tags: Optional[Mapping[str, str]] = None,
) -> Optional[dict[str, Any]]:
    """Create (or, on a relaunch, reopen) the sweep's parent run; write its file.

    Returns what was written to ``mlflow_parent.json``, or None with tracking=none.
    """
    if tracking_cfg.backend == "none":
        return None
    uri = absolute_uri(tracking_cfg.uri)
    why = check_reachable(uri)
    if why:
        raise ConfigError(
            f"tracking server {uri} is not reachable ({why}); start one for the sweep "
            "(launchers/mlflow_server.sh start) or use tracking.uri=sqlite:///... / tracking=none"
        )
    sweep_dir = Path(sweep_dir)
    jobs, swept = parse_sweep(overrides)
    all_tags = {
        "stage": "sweep",
        "sweep": "true",
        "sweep.dir": str(sweep_dir.resolve()),
        "sweep.overrides": " ".join(overrides)[:MAX_TAG_LEN],
        # every override as on the children (override.<key>), the swept ones
        # also as sweep.param.<key> = their sweep expression
        **override_tags(overrides),
        **{f"sweep.param.{k}": v[:MAX_TAG_LEN] for k, v in swept.items()},
        **({"sweep.num_jobs": str(len(jobs))} if jobs is not None else {}),
        **dict(tags or {}),
    }
    info = parent_run(tracking_cfg, sweep_dir, run_name, tags=all_tags,
                      record={"overrides": list(overrides), "num_jobs": len(jobs) if jobs is not None else None})
    assert info is not None  # tracking is on
    mlflow_client(uri).set_tag(info["run_id"], "sweep.launches", str(info["launches"]))
    return info


def child_runs(uri: str, parent_run_id: str) -> list[Any]:
    """Every run whose ``mlflow.parentRunId`` tag is ``parent_run_id`` (all pages)."""
    client = mlflow_client(uri)
    parent = client.get_run(parent_run_id)
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids=[parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finish_sweep_parent(
    info: Mapping[str, Any],
    completed: bool,
    local_failures: int = 0,
    reason: str = "",
) -> str:
    """Close the parent: FINISHED only if the multirun completed and no child
    (nor a job folder) failed or is still open; counts go in as metrics."""
    uri, run_id = info["tracking_uri"], info["run_id"]
    children = child_runs(uri, run_id)
    counts = {"FINISHED": 0, "FAILED": 0, "KILLED": 0, "RUNNING": 0}
    for r in children:
        s = r.info.status
        counts[s if s in counts else "RUNNING"] += 1
    bad = counts["FAILED"] + counts["KILLED"] + local_failures
    status = "FINISHED" if completed and bad == 0 and counts["RUNNING"] == 0 else "FAILED"
    expected = info.get("num_jobs")
    metrics = {
        "sweep_children": len(children),
        "sweep_finished": counts["FINISHED"],
        "sweep_failed": counts["FAILED"] + counts["KILLED"],
        "sweep_running": counts["RUNNING"],
        "sweep_failed_job_dirs": local_failures,
    }
    if expected is not None:
        metrics["sweep_expected_jobs"] = expected
    if not reason:
        reason = "completed" if status == "FINISHED" else (
            f"{bad} failed job(s), {counts['RUNNING']} still running" if completed else "multirun aborted")
    finish_parent_run(uri, run_id, status, metrics=metrics, tags={"sweep.end": reason})
    log.info("sweep parent run %s -> %s (%d children: %s)", run_id, status, len(children),
             ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return status
