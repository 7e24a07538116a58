"""stage=pipeline: run a chain of stages from one command or experiment file.

Each step is this job's config plus the step's overrides, composed by Hydra
(so a step can switch config groups, e.g. ``pruning=two_stage_2``), and runs in
``<run_dir>/<step name>``. A step that needs a model and names none starts from
the checkpoint the latest earlier step produced; ``init_from=@name`` picks a
named step's. Finished steps (their result.json exists) are skipped, so an
interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from pet.checkpoint import atomic_write_text
from pet.errors import ConfigError
from pet.stages.common import StageResult, read_result, run_dir
from pet.tracking import create_parent_run, finish_parent_run, reopen_parent_run

log = logging.getLogger(__name__)

NEEDS_MODEL = {"evaluate", "prune", "finetune", "distill"}


def _job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(("paths.run_dir=", "init_from=", "run_name="))]


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resolve_init(value: str, products: dict[str, str]) -> str:
    if value.startswith("@"):
        name = value[1:]
        if name not in products:
            raise ConfigError(f"init_from={value} names no earlier step that produced a checkpoint ({sorted(products)})")
        return products[name]
    return value


PARENT_FILE = "mlflow_parent.json"


def _parent_run(cfg: DictConfig, rd: Path, tags: dict[str, str]):
    """The pipeline's MLflow parent run: the one an earlier attempt of this
    pipeline created (so a re-run keeps every step under one parent), or a new one."""
    path = rd / PARENT_FILE
    if path.is_file():
        earlier = json.loads(path.read_text()).get("run_id")
        if earlier and reopen_parent_run(cfg.tracking, earlier):
            log.info("continuing MLflow parent run %s", earlier)
            return earlier
    parent = create_parent_run(cfg.tracking, run_name=f"pipeline:{cfg.run_name}", tags=tags)
    if parent:
        atomic_write_text(path, json.dumps({"run_id": parent}))
    return parent


def compose_step(overrides: list[str]) -> DictConfig:
    from hydra import compose

    return compose(config_name="config", overrides=overrides)


def format_table(rows: list[tuple[str, StageResult]]) -> str:
    lines = [f"{'step':<16} {'stage':<10} {'metric':<18} {'value':>10}  checkpoint", "-" * 78]
    for name, r in rows:
        value = "-" if r.metric is None else f"{r.metric:.4g}"
        lines.append(f"{name:<16} {r.stage:<10} {r.metric_name:<18} {value:>10}  {r.checkpoint or ''}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> StageResult:
    from pet.stages import run_stage

    if not cfg.stage.steps:
        raise ConfigError("stage=pipeline has no steps; use an experiment file that defines stage.steps")
    rd = run_dir(cfg)
    base = _job_overrides()
    from pet.sweep.tracking import job_tracking_context

    sweep_parent, sweep_tags = job_tracking_context(cfg)
    tags = {"stage": "pipeline", **sweep_tags}
    if sweep_parent:  # a pipeline job inside a --multirun sweep nests under the sweep's run
        tags["mlflow.parentRunId"] = sweep_parent
    parent = _parent_run(cfg, rd, tags)
    products: dict[str, str] = {}
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
            overrides = [o for o in overrides if not o.startswith("init_from=")]
            init = _resolve_init(explicit, products) if explicit else (latest if stage in NEEDS_MODEL else None)
            if stage in NEEDS_MODEL and not init:
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
            if result.checkpoint and stage != "evaluate":
                products[step.name] = result.checkpoint
                latest = result.checkpoint
        status = "FINISHED"
    finally:
        last_metrics = {f"{n}.{r.metric_name}": r.metric for n, r in rows if r.metric is not None}
        finish_parent_run(cfg.tracking, parent, status, last_metrics)
    table = format_table(rows)
    print(f"\npipeline {cfg.run_name} finished in {rd}\n{table}")
    if parent:
        from pet.tracking import absolute_uri

        print(f"MLflow: {absolute_uri(cfg.tracking.uri)} (parent run {parent}); "
              f"browse with: mlflow ui --backend-store-uri {absolute_uri(cfg.tracking.uri)}")
    final = rows[-1][1]
    return StageResult(stage="pipeline", metric_name=final.metric_name, metric=final.metric,
                       checkpoint=latest, metrics={n: r.metric for n, r in rows})
