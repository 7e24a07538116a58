"""stage=report: a sweep's table and Pareto plots.

    pet stage=report report.sweep_dir=outputs/sweeps/pretrain
    pet stage=report report.parent_run_id=<id> tracking.uri=http://127.0.0.1:5000
    pet stage=report report.sweep_dir=... report.measure=true   # time checkpoints without latency

Writes ``report.md``, ``report.csv`` and the plots (``bleu_vs_params.png``,
``bleu_vs_latency.png``, ``bleu_vs_ct2_latency.png``, ``bleu_vs_ct2_size.png``,
each where some job reports its cost) (``<sweep dir>/report/`` by default) and attaches them to
the sweep's MLflow parent run (recorded in ``<sweep dir>/mlflow_parent.json``, or
``report.parent_run_id``). See :mod:`pet.sweep.report`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pet.errors import ConfigError
from pet.stages.common import StageResult, finish_stage, run_dir
from pet.sweep.collect import COMPLETED, FAILED
from pet.sweep.report import ReportOptions, make_report
from pet.tracking import absolute_uri

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> StageResult:
    rep = cfg.report
    if not rep.sweep_dir and not rep.parent_run_id:
        raise ConfigError(
            "stage=report needs report.sweep_dir=<multirun folder, e.g. outputs/sweeps/<run_name>> "
            "or report.parent_run_id=<MLflow parent run id> (with the sweep's tracking.uri)"
        )
    if rep.sweep_dir and rep.parent_run_id:
        raise ConfigError("pass report.sweep_dir or report.parent_run_id, not both")
    rd = run_dir(cfg)
    opts = ReportOptions.from_config(
        OmegaConf.to_container(rep, resolve=True),  # type: ignore[arg-type]
        beam=int(cfg.generation.beam),
        threads=int(cfg.trainer.num_threads),
    )
    tracking_off = cfg.tracking.backend == "none"
    if tracking_off:
        opts.log_to_mlflow = opts.use_mlflow = False
    if rep.parent_run_id and not opts.output_dir:
        opts.output_dir = str(rd)
    uri = None if tracking_off else absolute_uri(cfg.tracking.uri)
    if rep.parent_run_id and uri is None:
        raise ConfigError("report.parent_run_id reads MLflow: set tracking.uri to the sweep's store (not tracking=none)")
    report = make_report(
        sweep_dir=str(Path(rep.sweep_dir).resolve()) if rep.sweep_dir else None,
        parent_run_id=rep.parent_run_id,
        tracking_uri=uri,
        options=opts,
    )
    print(f"\n{report.markdown}", flush=True)
    print(f"report files in {report.out_dir}: {', '.join(Path(p).name for p in report.files.values())}", flush=True)

    ys = [j.metrics[report.y] for j in report.jobs if report.y and j.status == COMPLETED and report.y in j.metrics]
    best = (max(ys) if report.maximize else min(ys)) if ys else None
    result = StageResult(
        stage="report",
        metric_name=f"best_{report.y}" if report.y else "jobs",
        metric=float(best) if best is not None else float(len(report.jobs)),
        metrics={
            "jobs": len(report.jobs),
            "completed": sum(j.status == COMPLETED for j in report.jobs),
            "failed": sum(j.status == FAILED for j in report.jobs),
            **{f"pareto_{name.split('_vs_')[-1]}": len(front) for name, front in report.fronts.items()},
            "files": report.files,
        },
    )
    # its figures and files went to the sweep's parent run (make_report), not a run of its own
    return finish_stage(cfg, result)
