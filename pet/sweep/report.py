"""The sweep report: one row per job, and where the Pareto front lies.

Jobs come from a multirun directory or from an MLflow parent run
(:mod:`pet.sweep.collect`); their metrics get one name per quantity
(:mod:`pet.sweep.metrics`: ``bleu_after`` -> ``bleu``, ``params_after`` ->
``parameters``, ``ms_per_sentence_b<N>[_after]`` -> ``latency_ms_b<N>``, ...).

Output, in ``<sweep dir>/report/`` unless told otherwise:

* ``report.md`` / ``report.csv`` (:mod:`pet.sweep.render`): the overrides that
  vary across the sweep, then the metric columns (default: BLEU, parameters,
  FLOPs per target token and latencies when present, then every other numeric
  metric), then the status;
* one PNG per plot of :data:`pet.sweep.plots.PLOTS` (``bleu_vs_params.png``,
  ``bleu_vs_latency.png``, ``bleu_vs_ct2_latency.png``, ``bleu_vs_ct2_size.png``):
  the metric against size, against measured latency in pet's eager loop, and
  against CTranslate2's latency (int8 at batch 1 where reported) and size on
  disk; the Pareto front (no other job has a better metric at no larger cost)
  is highlighted and connected.

Jobs that measured no latency can be measured here (``report.measure=true``,
:mod:`pet.sweep.retime`: each checkpoint is loaded and timed with the same beam
search at a fixed output length, so every job does identical work; in
CTranslate2 int8 too where ctranslate2 is installed). The files
are attached to the sweep's MLflow parent run (:mod:`pet.sweep.publish`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from pet.data.fileio import atomic_write_text
from pet.errors import ConfigError
from pet.sweep.collect import Job, collect_from_mlflow, collect_from_sweep_dir, merge_mlflow_children
from pet.sweep.metrics import lower_is_better
from pet.sweep.plots import PLOTS, draw_plots
from pet.sweep.publish import log_report_files
from pet.sweep.render import make_table, report_markdown, varying_overrides
from pet.tracking import read_parent

log = logging.getLogger(__name__)


@dataclass
class ReportOptions:
    metric: str = "bleu"
    maximize: Optional[bool] = None  # None: from the metric's name
    columns: list[str] = field(default_factory=list)  # [] = default (see pet.sweep.render)
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


def choose_y(jobs: Sequence[Job], opts: ReportOptions) -> tuple[Optional[str], bool, list[str]]:
    """The plots' metric: report.metric, else the main metric most jobs report;
    whether it is maximised; a note when it is not report.metric."""
    notes = []
    y: Optional[str] = opts.metric if any(opts.metric in j.metrics for j in jobs) else None
    if y is None:
        mains = [j.metric_name for j in jobs if j.metric_name and j.metric_name in j.metrics]
        if mains:
            y = max(set(mains), key=mains.count)
            notes.append(f"no job reports `{opts.metric}`; plots use the jobs' main metric `{y}` instead")
    maximize = opts.maximize if opts.maximize is not None else (not lower_is_better(y) if y else True)
    return y, maximize, notes


def _collect(
    sweep_dir: Optional[str | Path], parent_run_id: Optional[str], tracking_uri: Optional[str], opts: ReportOptions
) -> tuple[list[Job], Optional[dict[str, Any]]]:
    """The jobs, and the MLflow parent run they belong to (when known)."""
    if sweep_dir:
        jobs = collect_from_sweep_dir(sweep_dir)
        parent_info = read_parent(sweep_dir)
        if parent_info and opts.use_mlflow:
            try:
                merge_mlflow_children(jobs, parent_info["tracking_uri"], parent_info["run_id"])
            except Exception as e:
                log.warning("could not read the sweep's child runs from %s: %s", parent_info["tracking_uri"], e)
        return jobs, parent_info
    if parent_run_id:
        if not tracking_uri:
            raise ConfigError("report.parent_run_id needs tracking.uri (the store the sweep logged to)")
        return collect_from_mlflow(tracking_uri, parent_run_id), {"run_id": parent_run_id, "tracking_uri": tracking_uri}
    raise ConfigError("the report needs report.sweep_dir=<multirun folder> or report.parent_run_id=<MLflow run id>")


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
        jobs, parent_info = _collect(sweep_dir, parent_run_id, tracking_uri, opts)
    out_dir = Path(opts.output_dir) if opts.output_dir else (Path(sweep_dir) / "report" if sweep_dir else None)
    if out_dir is None:
        raise ConfigError("report.output_dir is not set; where should the report go?")
    out_dir.mkdir(parents=True, exist_ok=True)

    notes: list[str] = []
    if opts.measure:
        from pet.sweep.retime import measure_jobs  # noqa: PLC0415 - torch loads only when timing is asked for

        notes += measure_jobs(jobs, opts)
    y, maximize, y_notes = choose_y(jobs, opts)
    notes += y_notes
    fronts, images, plot_notes = draw_plots(jobs, opts, y, maximize, out_dir, varying_overrides(jobs))
    notes += plot_notes

    columns = {spec.name: spec.column for spec in PLOTS}
    table = make_table(jobs, opts.columns, {columns[name]: names for name, names in fronts.items()})
    source = f"sweep dir `{sweep_dir}`" if sweep_dir else f"MLflow parent run `{parent_run_id}` ({tracking_uri})"
    costs = "/".join(spec.what for spec in PLOTS)
    markdown = report_markdown(jobs, table, source, parent_info, y, maximize, costs, notes, images)
    atomic_write_text(out_dir / "report.md", markdown)
    atomic_write_text(out_dir / "report.csv", table.csv_text)
    files = {"report.md": str(out_dir / "report.md"), "report.csv": str(out_dir / "report.csv"), **images}
    if opts.log_to_mlflow and parent_info:
        try:
            log_report_files(parent_info["tracking_uri"], parent_info["run_id"], out_dir)
        except Exception as e:
            log.warning("report not logged to MLflow run %s: %s", parent_info["run_id"], e)
    return Report(jobs=list(jobs), columns=table.columns, rows=table.rows, markdown=markdown, table=table.markdown,
                  csv_text=table.csv_text, y=y, maximize=maximize, fronts=fronts, files=files, out_dir=str(out_dir),
                  notes=notes)
