"""stage=pipeline: run a chain of stages from one command or experiment file.

Each step is this job's config plus the step's overrides, composed by Hydra
(so a step can switch config groups, e.g. ``pruning=two_stage_2``), and runs in
``<run_dir>/<step name>``. A step that needs a model and names none starts from
the checkpoint the latest earlier step produced; ``init_from=@name`` picks a
named step's (any ``key=@name`` of a step, e.g. ``distill.teacher=@teacher``,
names that step's checkpoint). Finished steps (their result.json exists) are skipped, so an
interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pet.errors import ConfigError
from pet.runtime import is_main_process
from pet.stages import run_stage
from pet.stages.common import StageResult, finish_stage, read_result, resolve_step_reference, run_dir
from pet.stages.registry import stage as stage_entry
from pet.sweep.tracking import job_tracking_context
from pet.tracking import absolute_uri, finish_parent_run, parent_run

log = logging.getLogger(__name__)

def _job_overrides() -> list[str]:
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(("paths.run_dir=", "init_from=", "run_name="))]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resolve_references(overrides: list[str], step_dir: Path) -> list[str]:
    """Every ``key=@name`` of a step (``init_from``, ``distill.teacher``, ...) as
    the checkpoint the named earlier step produced."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        out.append(f"{key}={_quote(resolve_step_reference(value, step_dir, key))}" if sep and value.startswith("@") else o)
    return out


def _parent_run(cfg: DictConfig, rd: Path, tags: dict[str, str]):
    """The pipeline's MLflow parent run: the one an earlier attempt of this
    pipeline recorded in its run folder (so a re-run keeps every step under one
    parent), or a new one."""
    if not is_main_process():  # one parent per pipeline, not one per rank of a distributed job
        return None
    info = parent_run(cfg.tracking, rd, run_name=f"pipeline:{cfg.run_name}", tags=tags)
    return info["run_id"] if info else None


def compose_step(overrides: list[str]) -> DictConfig:
    return compose(config_name="config", overrides=overrides)


def format_table(rows: list[tuple[str, StageResult]]) -> str:
    lines = [f"{'step':<16} {'stage':<10} {'metric':<18} {'value':>10}  checkpoint", "-" * 78]
    for name, r in rows:
        value = "-" if r.metric is None else f"{r.metric:.4g}"
        lines.append(f"{name:<16} {r.stage:<10} {r.metric_name:<18} {value:>10}  {r.checkpoint or ''}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> StageResult:
    if not cfg.stage.steps:
        raise ConfigError("stage=pipeline has no steps; use an experiment file that defines stage.steps")
    rd = run_dir(cfg)
    base = _job_overrides()
    sweep_parent, sweep_tags = job_tracking_context(cfg)
    tags = {"stage": "pipeline", **sweep_tags}
    if sweep_parent:  # a pipeline job inside a --multirun sweep nests under the sweep's run
        tags["mlflow.parentRunId"] = sweep_parent
    parent = _parent_run(cfg, rd, tags)
    latest: str | None = cfg.init_from
    rows: list[tuple[str, StageResult]] = []
    status = "FAILED"
    try:
        for step in cfg.stage.steps:
            step_dir = rd / step.name
            # A step changes stage.name, not the stage group: the pipeline's own
            # group choices and settings (experiment, stage=demo) stay in force.
            overrides = [("stage.name=" + o[6:]) if o.startswith("stage=") else o for o in step.overrides]
            stage = next((o.split("=", 1)[1] for o in overrides if o.startswith("stage.name=")), None)
            if stage is None:
                raise ConfigError(f"pipeline step {step.name!r} has no stage=... override")
            if stage == "pipeline":
                raise ConfigError(f"pipeline step {step.name!r} cannot itself be a pipeline")
            explicit = next((o.split("=", 1)[1] for o in overrides if o.startswith("init_from=")), None)
            explicit = resolve_step_reference(explicit, step_dir, "init_from") if explicit else None
            overrides = _resolve_references([o for o in overrides if not o.startswith("init_from=")], step_dir)
            needs_model = stage_entry(stage).from_checkpoint
            init = explicit if explicit else (latest if needs_model else None)
            if needs_model and not init:
                raise ConfigError(f"pipeline step {step.name!r} (stage={stage}) needs a model but no earlier step made one")
            extra = [f"paths.run_dir={_quote(str(step_dir))}", f"run_name={step.name}"]
            if init:
                extra.append(f"init_from={_quote(init)}")
            if parent:
                extra.append(f"tracking.parent_run_id={parent}")
            result = read_result(step_dir)
            if result is not None:
                log.info("step %s already done (%s); skipping", step.name, step_dir / "result.json")
            else:
                log.info("=== step %s: %s", step.name, " ".join(overrides))
                result = run_stage(compose_step(list(cfg.stage.step_defaults) + base + overrides + extra))
            rows.append((step.name, result))
            if result.checkpoint and stage_entry(stage).produces_model:
                latest = result.checkpoint
        status = "FINISHED"
    finally:
        last_metrics = {f"{n}.{r.metric_name}": r.metric for n, r in rows if r.metric is not None}
        finish_parent_run(cfg.tracking, parent, status, last_metrics)
    table = format_table(rows)
    print(f"\npipeline {cfg.run_name} finished in {rd}\n{table}")
    if parent:
        print(f"MLflow: {absolute_uri(cfg.tracking.uri)} (parent run {parent}); "
              f"browse with: mlflow ui --backend-store-uri {absolute_uri(cfg.tracking.uri)}")
    final = rows[-1][1]
    result = StageResult(stage="pipeline", metric_name=final.metric_name, metric=final.metric,
                         checkpoint=latest, metrics={n: r.metric for n, r in rows}, run_id=parent)
    return finish_stage(cfg, result)
