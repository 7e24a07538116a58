"""What every stage shares: its setup, its result, and the end it comes to.

A stage recipe reads as ``setup_stage`` (threads, device, data, input
checkpoint checked against the data's dictionaries), its own work, and
``finish_stage`` (metrics to the tracking run, ``result.json``), so that every
stage leaves the same record and a new stage only writes its own work.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.data.fileio import atomic_write_text
from pet.data.prepare import prepare_data
from pet.data.prepared import PreparedData, load_prepared
from pet.errors import CheckpointError, ConfigError
from pet.pruning.origin import load_origin, origin_checkpoint
from pet.runtime import configure_threads, is_main_process, select_device, wait_for_all_ranks
from pet.tracking import NullTracker

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


def load_data(cfg: DictConfig) -> PreparedData:
    """Prepared corpus for ``cfg.data``, preparing it first if needed (idempotent)."""
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


def origin_teacher(init_from: str, history: list[dict[str, Any]], data: Any, alternative: str):
    """The unpruned model a pruning chain started from, checked against ``data``:
    the KD teacher of later pruning steps and of finetuning with KD.
    ``alternative`` is the setting the error suggests when the file is gone."""
    path = origin_checkpoint(init_from, history)
    ckpt = load_origin(path, alternative)
    check_same_vocab(ckpt, data, path)
    log.info("KD teacher: the chain's unpruned model %s", path)
    return model_from_checkpoint(ckpt)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def write_result(directory: Path, result: StageResult) -> None:
    atomic_write_text(directory / RESULT_FILE, json.dumps(asdict(result), indent=2, default=str))


def read_result(directory: Path) -> Optional[StageResult]:
    path = Path(directory) / RESULT_FILE
    if not path.is_file():
        return None
    return StageResult(**json.loads(path.read_text()))


@dataclass
class StageSetup:
    """What a stage starts with: its run folder, device, data and input checkpoint."""

    run_dir: Path
    device: torch.device
    data: Optional[PreparedData]
    checkpoint: Optional[dict[str, Any]]


def setup_stage(cfg: DictConfig, *, data: bool = True, checkpoint: bool = False,
                missing_checkpoint: Optional[str] = None) -> StageSetup:
    """Threads, device, the prepared data (prepared first if needed) and the
    ``init_from`` checkpoint, checked against the data's dictionaries.

    ``checkpoint``: load ``init_from`` when it is set; with
    ``missing_checkpoint`` it must be set, and that message is the error
    (name the stage and what to pass), raised before any data is read.
    """
    if checkpoint and missing_checkpoint and not cfg.init_from:
        raise ConfigError(missing_checkpoint)
    directory = run_dir(cfg)
    configure_threads(cfg.trainer.num_threads)
    device = select_device(cfg.trainer.device)
    prepared = load_data(cfg) if data else None
    ckpt = None
    if checkpoint and cfg.init_from:
        ckpt = load_checkpoint(cfg.init_from)
        if prepared is not None:
            check_same_vocab(ckpt, prepared, str(cfg.init_from))
    return StageSetup(directory, device, prepared, ckpt)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` a tracker can plot (numbers; not None, text or lists)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}


def finish_stage(cfg: DictConfig, result: StageResult, tracker: Optional[NullTracker] = None) -> StageResult:
    """The one way a stage ends: its numeric metrics and checkpoint path go to
    the tracking run (when there is one), and ``result.json`` to the run folder
    (what pipelines, sweeps and reports read back)."""
    if tracker is not None:
        tracker.log_metrics(numeric_metrics(result.metrics))
        if result.checkpoint:
            tracker.set_tags({"checkpoint": str(result.checkpoint)})
        result.run_id = result.run_id or tracker.run_id
    if is_main_process():
        write_result(run_dir(cfg), result)
    # Every rank leaves the stage together, once rank 0's checkpoint, report and
    # result.json exist (a pipeline's next step or a pruning iteration reads them).
    wait_for_all_ranks()
    return result


def resolve_step_reference(value: str, step_dir: Path, key: str) -> str:
    """``@name`` (in ``init_from``, ``distill.teacher``, ...) as the checkpoint
    an earlier step of the same pipeline produced; any other value unchanged.

    Pipeline steps run in ``<pipeline run_dir>/<step name>``, so ``@name`` is
    the checkpoint recorded in the sibling folder's result.json (or its
    checkpoint_best.pt). ``step_dir`` is the folder of the step that refers.
    """
    value = str(value)
    if not value.startswith("@"):
        return value
    name = value[1:]
    sibling = Path(step_dir).parent / name
    result = read_result(sibling)
    if result is not None and result.checkpoint:
        return result.checkpoint
    best = sibling / "checkpoint_best.pt"
    if best.is_file():
        return str(best)
    raise ConfigError(
        f"{key}={value} names no finished pipeline step: {sibling} has no result.json or "
        "checkpoint_best.pt (steps run in <pipeline run_dir>/<step name>); pass a checkpoint path instead"
    )
