"""Plumbing every stage shares: run folder, data, tracking, results."""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from pet.checkpoint import atomic_write_text
from pet.errors import CheckpointError
from pet.tracking import NullTracker, make_tracker
from pet.runtime import is_main_process
from pet.training.preemption import Preempted

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


@dataclass
class StageResult:
    """What a stage hands back: its main metric and the checkpoint it produced."""

    stage: str
    metric_name: str
    metric: Optional[float]
    checkpoint: Optional[str] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: Optional[str] = None


def run_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.data_root) / cfg.data.name


def load_data(cfg: DictConfig):
    """Prepared corpus for ``cfg.data``, preparing it first if needed (idempotent)."""
    from pet.data.prepare import load_prepared, prepare_data

    out = data_dir(cfg)
    prepare_data(cfg.data, out)
    return load_prepared(out)


def check_same_vocab(ckpt: dict[str, Any], data: Any, ckpt_path: str) -> None:
    """A checkpoint trained on other dictionaries would silently mistranslate."""
    if ckpt["src_dict"] != data.src_dict.to_list() or ckpt["tgt_dict"] != data.tgt_dict.to_list():
        raise CheckpointError(
            f"{ckpt_path} was trained with other dictionaries than data={data.name!s} "
            f"({len(ckpt['src_dict'])}/{len(ckpt['tgt_dict'])} vs {len(data.src_dict)}/{len(data.tgt_dict)} types); "
            "use the data config it was trained on"
        )


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def write_result(directory: Path, result: StageResult) -> None:
    atomic_write_text(directory / RESULT_FILE, json.dumps(asdict(result), indent=2, default=str))


def read_result(directory: Path) -> Optional[StageResult]:
    path = Path(directory) / RESULT_FILE
    if not path.is_file():
        return None
    return StageResult(**json.loads(path.read_text()))


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, resume_run_id: Optional[str] = None) -> Iterator[NullTracker]:
    """One tracking run per job (rank 0 only). A resumed job re-attaches to its
    run id and does not log params again; a failing job is marked FAILED with its traceback."""
    from pet.sweep.tracking import job_tracking_context

    main = is_main_process()
    tracker = make_tracker(cfg.tracking, enabled=main)
    # In a multirun job: the sweep's parent run (<sweep dir>/mlflow_parent.json)
    # unless tracking.parent_run_id is set; and the job's overrides as tags.
    parent_run_id, job_tags = job_tracking_context(cfg, enabled=main)
    tags = {"stage": cfg.stage.name, "model": cfg.model.name, "data": cfg.data.name, **job_tags, **dict(cfg.tracking.tags)}
    run_id = tracker.start(
        run_id=resume_run_id,
        run_name=cfg.tracking.run_name or f"{cfg.stage.name}:{cfg.model.name}:{cfg.data.name}",
        parent_run_id=parent_run_id,
        tags=tags,
    )
    if run_id and not resume_run_id:
        tracker.log_params(resolved_config(cfg))
    try:
        yield tracker
    except BaseException as e:
        interrupted = isinstance(e, (KeyboardInterrupt, Preempted))
        if not interrupted:
            with contextlib.suppress(Exception):
                rd = run_dir(cfg)
                atomic_write_text(rd / "traceback.txt", traceback.format_exc())
                tracker.log_artifact(rd / "traceback.txt")
        # A preempted run is KILLED, not FAILED: the requeued job re-attaches to it.
        tracker.end("KILLED" if interrupted else "FAILED")
        raise
    tracker.end("FINISHED")
    if run_id:
        log.info("tracked in %s (run %s)", tracker.where(), run_id)
