"""The jobs of a sweep, from its multirun folder or from its MLflow parent run.

A multirun folder's jobs are its sub-folders that hold ``.hydra/overrides.yaml``:
a ``result.json`` makes a job COMPLETED, a ``traceback.txt`` newer than any
result makes it FAILED, neither leaves it RUNNING/MISSING unless the job's
MLflow child run of the sweep's parent run says more (e.g. for a stage that
writes no result.json). An MLflow parent run's jobs are its children: status,
metrics, ``override.*`` tags, and the job's ``result.json`` when its run folder
is readable from here.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from pet.config.resolvers import run_dirname
from pet.errors import ConfigError, brief
from pet.sweep.metrics import canonicalize, numeric
from pet.sweep.tracking import check_reachable, child_runs, split_override

log = logging.getLogger(__name__)

COMPLETED, FAILED, MISSING, RUNNING, KILLED = "COMPLETED", "FAILED", "RUNNING/MISSING", "RUNNING", "KILLED"
MLFLOW_STATUS = {"FINISHED": COMPLETED, "FAILED": FAILED, "KILLED": KILLED, "RUNNING": RUNNING, "SCHEDULED": RUNNING}
SKIP_DIRS = {".submitit", "report", ".hydra"}


@dataclass
class Job:
    name: str  # sub-folder of the sweep dir, or the child run's sweep.job tag / name
    overrides: dict[str, str]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    metric_name: Optional[str] = None
    checkpoint: Optional[str] = None
    run_id: Optional[str] = None
    job_dir: Optional[str] = None
    num: Optional[int] = None
    error: Optional[str] = None
    measured: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("unreadable %s: %s", path, e)
        return None


def _read_overrides(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text()) or []
    except Exception as e:
        log.warning("unreadable %s: %s", path, e)
        return []
    return [str(o) for o in data]


def _job_num(job_dir: Path) -> Optional[int]:
    path = job_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    m = re.search(r"^\s+num: (\d+)\s*$", path.read_text(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _in_order(jobs: list[Job]) -> list[Job]:
    """By Hydra job number (jobs without one last), then by name."""
    jobs.sort(key=lambda j: (j.num is None, j.num if j.num is not None else 0, j.name))
    return jobs


def result_metrics(job_dir: Path, result: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics of a result.json; a pipeline's are merged from its steps'
    result.json files in step order (later steps win), plus ``<step>.<metric>``."""
    metrics = numeric(result.get("metrics") or {})
    if result.get("metric_name") and isinstance(result.get("metric"), (int, float)) and result["metric_name"] not in metrics:
        metrics[result["metric_name"]] = result["metric"]
    if result.get("stage") == "pipeline":
        merged: dict[str, float] = {}
        for step in (result.get("metrics") or {}):
            step_result = _read_json(job_dir / step / "result.json") if (job_dir / step / "result.json").is_file() else None
            if not step_result:
                continue
            merged.update(numeric(step_result.get("metrics") or {}))
            if step_result.get("metric_name") and isinstance(step_result.get("metric"), (int, float)):
                merged[f"{step}.{step_result['metric_name']}"] = step_result["metric"]
        metrics = {**merged, **({} if merged else metrics)}
    return canonicalize(metrics)


def job_from_dir(job_dir: Path, sweep_dir: Path) -> Job:
    overrides = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    ov = dict(split_override(o) for o in overrides)
    name = str(job_dir.relative_to(sweep_dir))
    result_path, tb_path = job_dir / "result.json", job_dir / "traceback.txt"
    result = _read_json(result_path) if result_path.is_file() else None
    failed = tb_path.is_file() and (result is None or tb_path.stat().st_mtime > result_path.stat().st_mtime)
    job = Job(name=name, overrides=ov, status=MISSING, job_dir=str(job_dir), num=_job_num(job_dir))
    if result is not None:
        job.metrics = result_metrics(job_dir, result)
        job.metric_name = result.get("metric_name")
        job.checkpoint = result.get("checkpoint")
        job.run_id = result.get("run_id")
        job.status = COMPLETED
    if failed:
        job.status = FAILED
        job.error = _last_line(tb_path.read_text(errors="replace"))
    return job


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders: the sweep dir's children with ``.hydra/overrides.yaml``
    (hydra.sweep.subdir is one path component, see pet.config.resolvers)."""
    return sorted(
        d for d in sweep_dir.iterdir()
        if d.is_dir() and d.name not in SKIP_DIRS and (d / ".hydra" / "overrides.yaml").is_file()
    )


def collect_from_sweep_dir(sweep_dir: str | Path) -> list[Job]:
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise ConfigError(f"report.sweep_dir={sweep} does not exist; pass the multirun folder "
                          "(hydra.sweep.dir, e.g. outputs/sweeps/<run_name>)")
    dirs = _job_dirs(sweep)
    if not dirs:
        raise ConfigError(
            f"report.sweep_dir={sweep} holds no sweep jobs (no */.hydra/overrides.yaml below it); "
            "pass the folder a `pet --multirun ...` wrote (outputs/sweeps/<run_name>), not a job folder"
        )
    return _in_order([job_from_dir(d, sweep) for d in dirs])


def collect_from_mlflow(uri: str, parent_run_id: str) -> list[Job]:
    try:
        runs = child_runs(uri, parent_run_id)
    except Exception as e:
        raise ConfigError(
            f"report.parent_run_id={parent_run_id} could not be read from {uri} ({brief(e, 200)}); "
            "check tracking.uri (the store the sweep logged to) and the run id"
        ) from e
    if not runs:
        raise ConfigError(f"MLflow run {parent_run_id} in {uri} has no child runs; is it a sweep's parent run?")
    jobs = []
    for r in runs:
        tags = r.data.tags
        ov = {k[len("override."):]: v for k, v in tags.items() if k.startswith("override.")}
        metrics = numeric(dict(r.data.metrics))
        job_dir = r.data.params.get("paths.run_dir")
        job = Job(
            name=tags.get("sweep.job") or r.info.run_name or r.info.run_id,
            overrides=ov,
            status=MLFLOW_STATUS.get(r.info.status, r.info.status),
            run_id=r.info.run_id,
            job_dir=job_dir,
            num=int(tags["sweep.job_num"]) if tags.get("sweep.job_num", "").isdigit() else None,
        )
        # The job's result.json, where its folder is visible from here, is richer
        # than what the run logged (e.g. parameters, latency tables).
        if job_dir and (Path(job_dir) / "result.json").is_file():
            result = _read_json(Path(job_dir) / "result.json") or {}
            metrics.update(result_metrics(Path(job_dir), result))
            job.metric_name = result.get("metric_name")
            job.checkpoint = result.get("checkpoint")
        if job.status == FAILED and job_dir and (Path(job_dir) / "traceback.txt").is_file():
            job.error = _last_line((Path(job_dir) / "traceback.txt").read_text(errors="replace"))
        job.metrics = canonicalize(metrics)
        jobs.append(job)
    return _in_order(jobs)


def merge_mlflow_children(jobs: Sequence[Job], uri: str, parent_run_id: str) -> int:
    """Complete job folders without result.json (a stage that writes none, or a
    job killed before it could) from their MLflow child runs: status and logged
    metrics. Children are matched by their ``paths.run_dir`` param, else by the
    ``sweep.job`` tag. Returns how many jobs were completed this way."""
    if check_reachable(uri):
        return 0
    runs = child_runs(uri, parent_run_id)
    by_dir: dict[str, Any] = {}
    by_name: dict[str, Any] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):  # the latest attempt wins
        if r.data.params.get("paths.run_dir"):
            by_dir[str(Path(r.data.params["paths.run_dir"]).resolve())] = r
        if r.data.tags.get("sweep.job"):
            by_name[run_dirname(r.data.tags["sweep.job"])] = r
    n = 0
    for j in jobs:
        run = by_dir.get(str(Path(j.job_dir).resolve())) if j.job_dir else None
        run = run or by_name.get(Path(j.job_dir).name if j.job_dir else j.name)
        if run is None:
            continue
        j.run_id = j.run_id or run.info.run_id
        if j.status != MISSING:
            continue
        j.status = MLFLOW_STATUS.get(run.info.status, run.info.status)
        j.metrics = canonicalize({**numeric(dict(run.data.metrics)), **j.metrics})
        n += 1
    return n
