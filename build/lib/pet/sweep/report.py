"""The sweep report: one row per job, and where the Pareto front lies.

Jobs come from a multirun directory (each of its sub-folders that holds
``.hydra/overrides.yaml``: its ``result.json`` makes it COMPLETED, a
``traceback.txt`` newer than any result makes it FAILED, neither is
RUNNING/MISSING unless the job's MLflow child run of the sweep's parent run
says more, e.g. for a stage that writes no result.json) or from an MLflow parent run (its children: status, metrics,
``override.*`` tags, and the job's ``result.json`` when its run folder is
readable from here).

Output, in ``<sweep dir>/report/`` unless told otherwise:

* ``report.md`` / ``report.csv``: the overrides that vary across the sweep, then
  the metric columns (default: BLEU, parameters, FLOPs per target token and
  latencies when present, then every other numeric metric), then the status;
* ``bleu_vs_params.png`` / ``bleu_vs_latency.png``: the metric against size and
  against measured latency; the Pareto front (no other job has a better metric
  at no larger size/latency) is highlighted and connected.

Names are normalised so that pet's stages line up: ``bleu_after`` -> ``bleu``,
``params_after`` -> ``parameters``, ``flops_per_tgt_token_after`` ->
``flops_per_tgt_token``, ``ms_per_sentence_b<N>[_after]`` -> ``latency_ms_b<N>``.
Jobs that measured no latency can be measured here (``report.measure=true``:
each checkpoint is loaded and timed with the same beam search at a fixed output
length, so every job does identical work).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from pet.checkpoint import atomic_write_bytes, atomic_write_text
from pet.errors import ConfigError, brief

log = logging.getLogger(__name__)

COMPLETED, FAILED, MISSING, RUNNING, KILLED = "COMPLETED", "FAILED", "RUNNING/MISSING", "RUNNING", "KILLED"
MLFLOW_STATUS = {"FINISHED": COMPLETED, "FAILED": FAILED, "KILLED": KILLED, "RUNNING": RUNNING, "SCHEDULED": RUNNING}

# Preferred leading metric columns, in this order, when present.
PREFERRED = ("bleu", "sacrebleu", "parameters", "flops_per_tgt_token")
ALIASES = {"bleu_after": "bleu", "params_after": "parameters", "flops_per_tgt_token_after": "flops_per_tgt_token"}
LATENCY_RE = re.compile(r"^(?:ms_per_sentence_b(\d+)(?:_after)?|latency_ms_b(\d+))$")
# Lower is better for metrics whose name contains one of these.
LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error", "latency", "seconds", "ms_")
SKIP_DIRS = {".submitit", "report", ".hydra"}


# ------------------------------------------------------------------ jobs


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


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[str(k)] = v
    return out


def canonicalize(metrics: Mapping[str, float]) -> dict[str, float]:
    """Add the canonical names (see module doc) next to the stage-specific ones."""
    out = dict(metrics)
    for src, dst in ALIASES.items():
        if src in metrics and dst not in out:
            out[dst] = metrics[src]
    for k, v in metrics.items():
        m = LATENCY_RE.match(k)
        if m and not k.startswith("latency_ms_b") and not k.endswith("_before"):
            dst = f"latency_ms_b{m.group(1)}"
            # an "_after" value (the pruned model) wins over a plain one
            if dst not in metrics and (dst not in out or k.endswith("_after")):
                out[dst] = v
    return out


def _alias_sources(keys: Iterable[str]) -> set[str]:
    keys = set(keys)
    src = {k for k, v in ALIASES.items() if k in keys and v in keys}
    src |= {k for k in keys if LATENCY_RE.match(k) and not k.startswith("latency_ms_b") and not k.endswith("_before")}
    return src


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("unreadable %s: %s", path, e)
        return None


def _read_overrides(path: Path) -> list[str]:
    import yaml

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


def result_metrics(job_dir: Path, result: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics of a result.json; a pipeline's are merged from its steps'
    result.json files in step order (later steps win), plus ``<step>.<metric>``."""
    metrics = _numeric(result.get("metrics") or {})
    if result.get("metric_name") and isinstance(result.get("metric"), (int, float)) and result["metric_name"] not in metrics:
        metrics[result["metric_name"]] = result["metric"]
    if result.get("stage") == "pipeline":
        merged: dict[str, float] = {}
        for step in (result.get("metrics") or {}):
            step_result = _read_json(job_dir / step / "result.json") if (job_dir / step / "result.json").is_file() else None
            if not step_result:
                continue
            merged.update(_numeric(step_result.get("metrics") or {}))
            if step_result.get("metric_name") and isinstance(step_result.get("metric"), (int, float)):
                merged[f"{step}.{step_result['metric_name']}"] = step_result["metric"]
        metrics = {**merged, **({} if merged else metrics)}
    return canonicalize(metrics)


def job_from_dir(job_dir: Path, sweep_dir: Path) -> Job:
    overrides = _read_overrides(job_dir / ".hydra" / "overrides.yaml")
    from pet.sweep.tracking import split_override

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
    jobs = [job_from_dir(d, sweep) for d in dirs]
    jobs.sort(key=lambda j: (j.num is None, j.num if j.num is not None else 0, j.name))
    return jobs


def collect_from_mlflow(uri: str, parent_run_id: str) -> list[Job]:
    from pet.sweep.tracking import child_runs

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
        metrics = _numeric(dict(r.data.metrics))
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
    jobs.sort(key=lambda j: (j.num is None, j.num if j.num is not None else 0, j.name))
    return jobs


def merge_mlflow_children(jobs: Sequence[Job], uri: str, parent_run_id: str) -> int:
    """Complete job folders without result.json (a stage that writes none, or a
    job killed before it could) from their MLflow child runs: status and logged
    metrics. Children are matched by their ``paths.run_dir`` param, else by the
    ``sweep.job`` tag. Returns how many jobs were completed this way."""
    from pet.config.resolvers import run_dirname
    from pet.sweep.tracking import check_reachable, child_runs

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
        j.metrics = canonicalize({**_numeric(dict(run.data.metrics)), **j.metrics})
        n += 1
    return n


# --------------------------------------------------------------- options


@dataclass
class ReportOptions:
    metric: str = "bleu"
    maximize: Optional[bool] = None  # None: from the metric's name
    columns: list[str] = field(default_factory=list)  # [] = default (see module doc)
    params_key: str = "parameters"
    latency_key: Optional[str] = None  # None: latency_ms_b1, else the smallest batch measured
    output_dir: Optional[str] = None
    log_to_mlflow: bool = True
    use_mlflow: bool = True  # sweep dir: fill jobs without result.json from their child runs
    measure: bool = False
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1])
    latency_length: int = 25
    latency_repeats: int = 3
    beam: int = 5
    threads: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **extra: Any) -> "ReportOptions":
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in dict(cfg).items() if k in names}
        values.update({k: v for k, v in extra.items() if k in names})
        for key in ("columns", "latency_batch_sizes"):
            if key in values and values[key] is not None:
                values[key] = list(values[key])
        return cls(**values)


def lower_is_better(name: str) -> bool:
    return any(s in name.lower() for s in LOWER_IS_BETTER)


# ----------------------------------------------------------------- table


def varying_overrides(jobs: Sequence[Job]) -> list[str]:
    keys: list[str] = []
    for j in jobs:
        keys += [k for k in j.overrides if k not in keys]
    return [k for k in keys if len({j.overrides.get(k, "") for j in jobs}) > 1]


def metric_columns(jobs: Sequence[Job], requested: Sequence[str] = ()) -> list[str]:
    if requested:
        return list(requested)
    present: list[str] = []
    for j in jobs:
        present += [k for k in j.metrics if k not in present]
    skip = _alias_sources(present)
    lat = sorted((k for k in present if k.startswith("latency_ms_b")), key=lambda k: int(k[len("latency_ms_b"):]))
    lead = [k for k in PREFERRED if k in present] + lat
    rest = sorted(k for k in present if k not in lead and k not in skip)
    return lead + rest


def pareto_front(points: Sequence[tuple[float, float]], maximize: bool = True) -> list[int]:
    """Indices of points no other point dominates (y better or equal at x smaller
    or equal, strictly better in one), sorted by x."""
    def better_or_eq(a: float, b: float) -> bool:
        return a >= b if maximize else a <= b

    def strictly(a: float, b: float) -> bool:
        return a > b if maximize else a < b

    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            xj <= xi and better_or_eq(yj, yi) and (xj < xi or strictly(yj, yi))
            for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1] if maximize else points[i][1]))


@dataclass
class Axis:
    key: str
    label: str


@dataclass
class Report:
    jobs: list[Job]
    columns: list[str]  # header of the table
    rows: list[dict[str, Any]]
    markdown: str  # the whole report.md
    table: str  # its table alone
    csv_text: str
    y: Optional[str]
    maximize: bool
    fronts: dict[str, list[str]]  # plot name -> job names on its front
    files: dict[str, str]
    out_dir: Optional[str]
    notes: list[str]


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return _fmt(int(v))
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def to_markdown(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return buf.getvalue()


def choose_y(jobs: Sequence[Job], opts: ReportOptions) -> tuple[Optional[str], bool, list[str]]:
    notes = []
    y: Optional[str] = opts.metric if any(opts.metric in j.metrics for j in jobs) else None
    if y is None:
        mains = [j.metric_name for j in jobs if j.metric_name and j.metric_name in j.metrics]
        if mains:
            y = max(set(mains), key=mains.count)
            notes.append(f"no job reports `{opts.metric}`; plots use the jobs' main metric `{y}` instead")
    maximize = opts.maximize if opts.maximize is not None else (not lower_is_better(y) if y else True)
    return y, maximize, notes


def choose_latency(jobs: Sequence[Job], opts: ReportOptions) -> Optional[str]:
    if opts.latency_key:
        return opts.latency_key
    keys = {k for j in jobs for k in j.metrics if k.startswith("latency_ms_b")}
    if not keys:
        return None
    return "latency_ms_b1" if "latency_ms_b1" in keys else min(keys, key=lambda k: int(k[len("latency_ms_b"):]))


def build_rows(jobs: Sequence[Job], opts: ReportOptions) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    ov_cols = varying_overrides(jobs)
    m_cols = metric_columns(jobs, opts.columns)
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"job": j.name}
        row.update({k: j.overrides.get(k) for k in ov_cols})
        row.update({k: j.metrics.get(k) for k in m_cols})
        row.update(status=j.status, run_id=j.run_id, job_dir=j.job_dir, checkpoint=j.checkpoint, error=j.error)
        rows.append(row)
    return ov_cols, m_cols, rows


def _label(job: Job, keys: Sequence[str]) -> str:
    if not keys:
        return job.name
    return ",".join(f"{k.split('.')[-1]}={job.overrides.get(k, '')}" for k in keys)


def plot(jobs: Sequence[Job], x: str, y: str, maximize: bool, path: Path, title: str, label_keys: Sequence[str]) -> list[str]:
    """Scatter of completed jobs with both values; the Pareto front highlighted.
    Returns the names of the jobs on the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(j, float(j.metrics[x]), float(j.metrics[y])) for j in jobs
           if j.status == COMPLETED and x in j.metrics and y in j.metrics]
    front_idx = pareto_front([(px, py) for _, px, py in pts], maximize=maximize)
    on_front = set(front_idx)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    others = [p for i, p in enumerate(pts) if i not in on_front]
    if others:
        ax.scatter([p[1] for p in others], [p[2] for p in others], s=28, c="#8c8c8c", label="job", zorder=2)
    fr = [pts[i] for i in front_idx]
    if fr:
        ax.plot([p[1] for p in fr], [p[2] for p in fr], "-", c="#d62728", lw=1.5, zorder=3)
        ax.scatter([p[1] for p in fr], [p[2] for p in fr], s=60, c="#d62728", edgecolors="black",
                   label="Pareto front", zorder=4)
    for j, px, py in pts:
        ax.annotate(_label(j, label_keys), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#333333")
    xs = [p[1] for p in pts]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x + ("  (smaller is better)"))
    ax.set_ylabel(y + ("  (higher is better)" if maximize else "  (lower is better)"))
    ax.set_title(f"{title} ({len(pts)} of {len(jobs)} jobs plotted)", fontsize=10)
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no completed job with both values", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    try:
        atomic_write_bytes(path, save)
    finally:
        plt.close(fig)
    return [pts[i][0].name for i in front_idx]


# ------------------------------------------------------------ measurement


def measure_jobs(jobs: Sequence[Job], opts: ReportOptions, device: str = "cpu") -> list[str]:
    """Fill parameters / FLOPs / latency for completed jobs whose results lack
    them, from their checkpoints: identical work for every model (synthetic
    sources of ``latency_length`` tokens, beam ``beam``, exactly
    ``latency_length`` decoding steps) in this one process, one after another."""
    need = [j for j in jobs if j.status == COMPLETED and j.checkpoint and Path(j.checkpoint).is_file()]
    if not need:
        return []
    import torch

    from pet.analysis.flops import count_flops
    from pet.analysis.latency import latency_sweep
    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.runtime import configure_threads

    threads = configure_threads(opts.threads)
    notes = []
    for j in need:
        lat_keys = [f"latency_ms_b{bs}" for bs in opts.latency_batch_sizes]
        todo_lat = [bs for bs, k in zip(opts.latency_batch_sizes, lat_keys) if k not in j.metrics]
        todo_flops = "flops_per_tgt_token" not in j.metrics
        todo_params = "parameters" not in j.metrics
        if not (todo_lat or todo_flops or todo_params):
            continue
        model = model_from_checkpoint(load_checkpoint(j.checkpoint)).to(torch.device(device)).eval()
        if todo_params:
            j.metrics["parameters"] = int(model.num_parameters())
            j.measured.append("parameters")
        if todo_flops:
            rep = count_flops(model, src_len=opts.latency_length, tgt_len=opts.latency_length, beam=opts.beam)
            j.metrics["flops_per_tgt_token"] = float(rep.total_per_tgt_token)
            j.measured.append("flops_per_tgt_token")
        if todo_lat:
            res = latency_sweep(model, batch_sizes=tuple(todo_lat), src_len=opts.latency_length, beam=opts.beam,
                                fixed_length=opts.latency_length, num_threads=threads, warmup=1,
                                repeats=opts.latency_repeats)
            for bs, r in zip(todo_lat, res):
                j.metrics[f"latency_ms_b{bs}"] = float(r.ms_per_sentence)
                j.measured.append(f"latency_ms_b{bs}")
        log.info("measured %s: %s", j.name, ", ".join(f"{k}={j.metrics[k]:.4g}" for k in j.measured))
    if any(j.measured for j in jobs):
        notes.append(
            f"measured by the report from each checkpoint: parameters/FLOPs/latency where the job had none "
            f"(beam {opts.beam}, {opts.latency_length} source tokens and decoding steps, batch sizes "
            f"{list(opts.latency_batch_sizes)}, median of {opts.latency_repeats}, {threads} threads, {device})"
        )
    return notes


# ----------------------------------------------------------------- output


def log_report_files(uri: str, run_id: str, out_dir: str | Path) -> None:
    """Attach the report's files to an MLflow run (under ``report/``)."""
    from pet.sweep.tracking import _client, check_reachable

    why = check_reachable(uri)
    if why:
        log.warning("not logging the report to MLflow: %s is not reachable (%s)", uri, why)
        return
    client = _client(uri)
    for name in ("report.md", "report.csv", "bleu_vs_params.png", "bleu_vs_latency.png"):
        path = Path(out_dir) / name
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path="report")
    log.info("report logged to MLflow run %s (artifacts report/)", run_id)


def make_report(
    sweep_dir: Optional[str | Path] = None,
    parent_run_id: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    options: Optional[ReportOptions] = None,
    jobs: Optional[list[Job]] = None,
) -> Report:
    """Collect the jobs, write the table and the plots, log them to the parent run."""
    opts = options or ReportOptions()
    parent_info = None
    if jobs is None:
        if sweep_dir:
            jobs = collect_from_sweep_dir(sweep_dir)
            from pet.sweep.tracking import read_parent

            parent_info = read_parent(sweep_dir)
            if parent_info and opts.use_mlflow:
                try:
                    merge_mlflow_children(jobs, parent_info["tracking_uri"], parent_info["run_id"])
                except Exception as e:
                    log.warning("could not read the sweep's child runs from %s: %s", parent_info["tracking_uri"], e)
        elif parent_run_id:
            if not tracking_uri:
                raise ConfigError("report.parent_run_id needs tracking.uri (the store the sweep logged to)")
            jobs = collect_from_mlflow(tracking_uri, parent_run_id)
            parent_info = {"run_id": parent_run_id, "tracking_uri": tracking_uri}
        else:
            raise ConfigError("the report needs report.sweep_dir=<multirun folder> or report.parent_run_id=<MLflow run id>")
    out_dir = Path(opts.output_dir) if opts.output_dir else (Path(sweep_dir) / "report" if sweep_dir else None)
    if out_dir is None:
        raise ConfigError("report.output_dir is not set; where should the report go?")
    out_dir.mkdir(parents=True, exist_ok=True)

    notes: list[str] = []
    if opts.measure:
        notes += measure_jobs(jobs, opts)
    y, maximize, y_notes = choose_y(jobs, opts)
    notes += y_notes
    ov_cols, m_cols, rows = build_rows(jobs, opts)
    lat = choose_latency(jobs, opts)

    files: dict[str, str] = {}
    fronts: dict[str, list[str]] = {}
    plots = (("bleu_vs_params", opts.params_key, "size"), ("bleu_vs_latency", lat, "latency"))
    for name, x, what in plots:
        if y is None:
            notes.append(f"{name}.png not drawn: no job has `{opts.metric}` nor a main metric")
            continue
        if x is None or not any(x in j.metrics for j in jobs):
            hint = " (set report.measure=true to time each job's checkpoint)" if what == "latency" else ""
            notes.append(f"{name}.png not drawn: no job reports {what} (`{x or 'latency_ms_b*'}`){hint}")
            continue
        path = out_dir / f"{name}.png"
        fronts[name] = plot(jobs, x, y, maximize, path, f"{y} vs {x}", ov_cols)
        files[name] = str(path)

    front_cols = []
    for name in fronts:
        col = "pareto_" + name.split("_vs_")[-1]
        front_cols.append(col)
        for job, row in zip(jobs, rows):
            row[col] = job.name in fronts[name]
    md_cols = (ov_cols or ["job"]) + m_cols + ["status"]
    for name, col in zip(fronts, front_cols):
        md_cols.append(col)
        for row in rows:
            row[col] = "*" if row[col] else ""
    csv_cols = ["job", *ov_cols, *m_cols, "status", *front_cols, "run_id", "job_dir", "checkpoint", "error"]
    csv_rows = [{**r, **{c: bool(r.get(c)) for c in front_cols}} for r in rows]
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    source = f"sweep dir `{sweep_dir}`" if sweep_dir else f"MLflow parent run `{parent_run_id}` ({tracking_uri})"
    head = ["# Sweep report", "", f"{len(jobs)} jobs from {source}: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    if parent_info:
        head.append(f"MLflow parent run `{parent_info['run_id']}` in {parent_info.get('tracking_uri')}.")
    if y:
        head.append(f"Pareto fronts (`*`): no other completed job has a {'higher' if maximize else 'lower'} "
                    f"or equal `{y}` at no larger size/latency.")
    table = to_markdown(md_cols, rows)
    failures = [f"- `{j.name}`: {j.error}" for j in jobs if j.status == FAILED and j.error]
    body = head + [""] + [table] + ([""] + ["Failed jobs:"] + failures if failures else []) \
        + ([""] + [f"Note: {n}" for n in notes] if notes else []) \
        + ([""] + [f"![{k}]({Path(v).name})" for k, v in files.items()] if files else [])
    markdown = "\n".join(body) + "\n"
    csv_text = to_csv(csv_cols, csv_rows)
    atomic_write_text(out_dir / "report.md", markdown)
    atomic_write_text(out_dir / "report.csv", csv_text)
    files = {"report.md": str(out_dir / "report.md"), "report.csv": str(out_dir / "report.csv"), **files}
    if opts.log_to_mlflow and parent_info:
        try:
            log_report_files(parent_info["tracking_uri"], parent_info["run_id"], out_dir)
        except Exception as e:
            log.warning("report not logged to MLflow run %s: %s", parent_info["run_id"], e)
    return Report(jobs=list(jobs), columns=md_cols, rows=rows, markdown=markdown, table=table, csv_text=csv_text, y=y,
                  maximize=maximize, fronts=fronts, files=files, out_dir=str(out_dir), notes=notes)
