"""The report's plots: a metric against a cost, the Pareto front highlighted.

:data:`PLOTS` is the one list of plots: each names its file, its x metric (a
cost: size, latency, ...; smaller is better) and its y metric (by default the
report's metric, e.g. BLEU). A plot is drawn when some job reports both; its
front also becomes a table column (``pareto_<what follows _vs_ in its name>``)
and its PNG is attached to the MLflow parent run with the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from pet.data.fileio import atomic_write_with
from pet.sweep.collect import COMPLETED, Job
from pet.sweep.metrics import (
    CT2_LATENCY_RE,
    CT2_SIZE_KEY,
    LATENCY_PREFIX,
    latency_batch,
    lower_is_better,
    quantization_rank,
)
from pet.sweep.pareto import pareto_front

if TYPE_CHECKING:
    from pet.sweep.report import ReportOptions

# A metric name, or how to choose one from the jobs and the report's options.
MetricChoice = str | Callable[[Sequence[Job], "ReportOptions"], Optional[str]]


@dataclass(frozen=True)
class PlotSpec:
    name: str  # file <name>.png; key of Report.fronts and Report.files
    x: MetricChoice  # the cost on x (smaller is better)
    what: str  # what x measures, for the notes ("no job reports <what>")
    y: Optional[str] = None  # None: the report's metric (report.metric, else the jobs' main metric)
    x_pattern: str = ""  # shown for x when the choice finds none
    hint: str = ""  # how to get x when no job reports it

    @property
    def column(self) -> str:
        """The table column that marks the jobs on this plot's front."""
        return "pareto_" + self.name.split("_vs_")[-1]

    def x_metric(self, jobs: Sequence[Job], opts: "ReportOptions") -> Optional[str]:
        return self.x if isinstance(self.x, str) else self.x(jobs, opts)


def choose_latency(jobs: Sequence[Job], opts: "ReportOptions") -> Optional[str]:
    """report.latency_key, else latency_ms_b1, else the smallest batch any job measured."""
    if opts.latency_key:
        return opts.latency_key
    keys = {k for j in jobs for k in j.metrics if k.startswith(LATENCY_PREFIX)}
    if not keys:
        return None
    return f"{LATENCY_PREFIX}1" if f"{LATENCY_PREFIX}1" in keys else min(keys, key=latency_batch)


def choose_ct2_latency(jobs: Sequence[Job], opts: "ReportOptions") -> Optional[str]:
    """CTranslate2's ms/sentence: int8 before other quantizations, batch 1 before larger batches."""
    keys = {k for j in jobs for k in j.metrics if CT2_LATENCY_RE.match(k)}
    return min(keys, key=lambda k: (quantization_rank(CT2_LATENCY_RE.match(k).group(1)),
                                    int(CT2_LATENCY_RE.match(k).group(2))), default=None)


def choose_ct2_size(jobs: Sequence[Job], opts: "ReportOptions") -> Optional[str]:
    """CTranslate2's folder size in MB: int8 before other quantizations."""
    keys = {k for j in jobs for k in j.metrics if CT2_SIZE_KEY.match(k)}
    return min(keys, key=lambda k: quantization_rank(CT2_SIZE_KEY.match(k).group(1)), default=None)


CT2_HINT = (" (stage=prune and stage=export report it where ctranslate2 is installed; report.measure=true times "
            "each job's checkpoint in CTranslate2 int8; install it with: pip install -e \".[serve]\")")

PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec("bleu_vs_params", x=lambda jobs, opts: opts.params_key, what="size"),
    PlotSpec("bleu_vs_latency", x=choose_latency, what="latency", x_pattern=f"{LATENCY_PREFIX}*",
             hint=" (set report.measure=true to time each job's checkpoint)"),
    PlotSpec("bleu_vs_ct2_latency", x=choose_ct2_latency, what="CTranslate2 latency",
             x_pattern="ct2_int8_latency_ms_b1", hint=CT2_HINT),
    PlotSpec("bleu_vs_ct2_size", x=choose_ct2_size, what="CTranslate2 size on disk", x_pattern="ct2_int8_mb",
             hint=CT2_HINT),
)


def _label(job: Job, keys: Sequence[str]) -> str:
    if not keys:
        return job.name
    return ",".join(f"{k.split('.')[-1]}={job.overrides.get(k, '')}" for k in keys)


def plot(jobs: Sequence[Job], x: str, y: str, maximize: bool, path: Path, title: str, label_keys: Sequence[str]) -> list[str]:
    """Scatter of completed jobs with both values; the Pareto front highlighted.
    Returns the names of the jobs on the front."""
    import matplotlib  # noqa: PLC0415 - heavy; only needed when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use("Agg"), so no display is needed

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
        atomic_write_with(path, save)
    finally:
        plt.close(fig)
    return [pts[i][0].name for i in front_idx]


def draw_plots(
    jobs: Sequence[Job],
    opts: "ReportOptions",
    y: Optional[str],
    maximize: bool,
    out_dir: Path,
    label_keys: Sequence[str],
) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """Draw every plot of :data:`PLOTS` that some job has values for, into ``out_dir``.

    ``y``/``maximize``: the report's metric and its direction. Returns (plot
    name -> names of the jobs on its front, plot name -> its file, notes on the
    plots not drawn), in the order of :data:`PLOTS`.
    """
    fronts: dict[str, list[str]] = {}
    files: dict[str, str] = {}
    notes: list[str] = []
    for spec in PLOTS:
        py, py_max = (spec.y, not lower_is_better(spec.y)) if spec.y else (y, maximize)
        if py is None:
            notes.append(f"{spec.name}.png not drawn: no job has `{opts.metric}` nor a main metric")
            continue
        if spec.y and not any(spec.y in j.metrics for j in jobs):
            notes.append(f"{spec.name}.png not drawn: no job reports `{spec.y}`")
            continue
        x = spec.x_metric(jobs, opts)
        if x is None or not any(x in j.metrics for j in jobs):
            notes.append(f"{spec.name}.png not drawn: no job reports {spec.what} (`{x or spec.x_pattern}`){spec.hint}")
            continue
        path = out_dir / f"{spec.name}.png"
        fronts[spec.name] = plot(jobs, x, py, py_max, path, f"{py} vs {x}", label_keys)
        files[spec.name] = str(path)
    return fronts, files, notes
