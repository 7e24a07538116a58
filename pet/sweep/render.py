"""The report's table, as Markdown and CSV, and the report.md around it.

Columns: the overrides that vary across the sweep, then the metrics (by
default BLEU, parameters, FLOPs per target token, latencies, CTranslate2
latencies and sizes on disk when present, then every other numeric metric; stage-specific names whose canonical name is
present are left out), then the status and one column per Pareto front. The
CSV also has the job's name, run id, folder, checkpoint and error.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pet.sweep.collect import FAILED, Job
from pet.sweep.metrics import LATENCY_PREFIX, PREFERRED, alias_sources, ct2_columns, latency_batch


@dataclass
class Table:
    columns: list[str]  # report.md's table header
    rows: list[dict[str, Any]]  # one per job; front columns hold "*" or ""
    markdown: str  # the table alone
    csv_text: str


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
    skip = alias_sources(present)
    lat = sorted((k for k in present if k.startswith(LATENCY_PREFIX)), key=latency_batch)
    lead = [k for k in PREFERRED if k in present] + lat + ct2_columns(present)
    rest = sorted(k for k in present if k not in lead and k not in skip)
    return lead + rest


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


def make_table(jobs: Sequence[Job], requested: Sequence[str], fronts: Mapping[str, Sequence[str]]) -> Table:
    """The table over ``jobs``: ``requested`` metric columns (none: the
    default, see module doc); ``fronts``: front column -> the jobs on that front
    (``*`` in report.md, True/False in the CSV)."""
    ov_cols = varying_overrides(jobs)
    m_cols = metric_columns(jobs, requested)
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"job": j.name}
        row.update({k: j.overrides.get(k) for k in ov_cols})
        row.update({k: j.metrics.get(k) for k in m_cols})
        row.update(status=j.status, run_id=j.run_id, job_dir=j.job_dir, checkpoint=j.checkpoint, error=j.error)
        row.update({col: "*" if j.name in names else "" for col, names in fronts.items()})
        rows.append(row)
    md_cols = (ov_cols or ["job"]) + m_cols + ["status", *fronts]
    csv_cols = ["job", *ov_cols, *m_cols, "status", *fronts, "run_id", "job_dir", "checkpoint", "error"]
    csv_rows = [{**r, **{c: bool(r.get(c)) for c in fronts}} for r in rows]
    return Table(columns=md_cols, rows=rows, markdown=to_markdown(md_cols, rows), csv_text=to_csv(csv_cols, csv_rows))


def report_markdown(
    jobs: Sequence[Job],
    table: Table,
    source: str,
    parent_info: Optional[Mapping[str, Any]],
    y: Optional[str],
    maximize: bool,
    costs: str,
    notes: Sequence[str],
    images: Mapping[str, str],
) -> str:
    """report.md: where the jobs come from and how they ended, the table, the
    failures, the notes, and the plots (``images``: plot name -> file). ``costs``
    names the plots' x axes for the front's definition (e.g. "size/latency")."""
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    head = ["# Sweep report", "", f"{len(jobs)} jobs from {source}: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    if parent_info:
        head.append(f"MLflow parent run `{parent_info['run_id']}` in {parent_info.get('tracking_uri')}.")
    if y:
        head.append(f"Pareto fronts (`*`): no other completed job has a {'higher' if maximize else 'lower'} "
                    f"or equal `{y}` at no larger {costs}.")
    failures = [f"- `{j.name}`: {j.error}" for j in jobs if j.status == FAILED and j.error]
    body = head + [""] + [table.markdown] + ([""] + ["Failed jobs:"] + failures if failures else []) \
        + ([""] + [f"Note: {n}" for n in notes] if notes else []) \
        + ([""] + [f"![{k}]({Path(v).name})" for k, v in images.items()] if images else [])
    return "\n".join(body) + "\n"
