"""Plumbing every stage shares: run folder, data, tracking, results."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import socket
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from pet.checkpoint import atomic_write_text, load_checkpoint
from pet.config.schema import DataConfig, ModelConfig
from pet.errors import CheckpointError, ConfigError
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


# Stages that start from a checkpoint and read data: they run on the
# checkpoint's own data config unless the command line names one.
FROM_CHECKPOINT = ("evaluate", "prune", "finetune", "distill")


def command_line_overrides() -> Optional[list[str]]:
    """This job's command-line overrides; None when composed in code (tests, benchmarks)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _names(overrides: list[str], group: str) -> bool:
    """Whether the command line sets ``group`` (``group=...`` or ``group.key=...``)."""
    return any(o.lstrip("+~").startswith((f"{group}=", f"{group}.")) for o in overrides)


def origin_teacher(init_from: str, history: list[dict[str, Any]], data: Any, alternative: str):
    """The unpruned model a pruning chain started from, checked against ``data``:
    the KD teacher of later pruning steps and of finetuning with KD.
    ``alternative`` is the setting the error suggests when the file is gone."""
    from pet.checkpoint import model_from_checkpoint
    from pet.pruning.kd import load_origin, origin_checkpoint

    path = origin_checkpoint(init_from, history)
    ckpt = load_origin(path, alternative)
    check_same_vocab(ckpt, data, path)
    log.info("KD teacher: the chain's unpruned model %s", path)
    return model_from_checkpoint(ckpt)


def trained_config(path: str) -> dict[str, Any]:
    """The resolved config a checkpoint was trained with ({} if it has none)."""
    p = Path(path)
    return _trained_config(str(p.resolve()), p.stat().st_mtime)


@functools.lru_cache(maxsize=4)
def _trained_config(path: str, mtime: float) -> dict[str, Any]:
    return load_checkpoint(path).get("config") or {}


def _data_checkpoint(cfg: DictConfig) -> Optional[str]:
    if cfg.init_from and not (cfg.stage.name == "distill" and cfg.distill.from_scratch):
        return str(cfg.init_from)
    teacher = cfg.distill.teacher if cfg.stage.name == "distill" else None
    return str(teacher) if teacher and not str(teacher).startswith("@") else None


def with_checkpoint_data(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``data`` set to what its checkpoint was trained on, so that
    ``init_from=<checkpoint>`` alone is enough; an explicit ``data`` setting on
    the command line stays, and must name the same corpus."""
    if cfg.stage.name not in FROM_CHECKPOINT:
        return cfg
    path = _data_checkpoint(cfg)
    if path is None or not Path(path).is_file():
        return cfg  # the stage itself says what is missing
    trained = trained_config(path).get("data")
    overrides = command_line_overrides()
    if not trained or overrides is None:
        return cfg
    if _names(overrides, "data"):
        mine = (cfg.data.name, cfg.data.src_lang, cfg.data.tgt_lang)
        theirs = (trained.get("name"), trained.get("src_lang"), trained.get("tgt_lang"))
        if mine != theirs:
            raise ConfigError(
                f"{path} was trained on data {theirs[0]} ({theirs[1]}->{theirs[2]}), but this command asks for "
                f"{mine[0]} ({mine[1]}->{mine[2]}); drop the data settings (the checkpoint knows its data) "
                "or pass a checkpoint trained on that corpus"
            )
        return cfg
    adopted = copy.deepcopy(cfg)
    adopted.data = OmegaConf.merge(OmegaConf.structured(DataConfig), trained)
    log.info("data: %s (%s->%s), the corpus %s was trained on", adopted.data.name, adopted.data.src_lang,
             adopted.data.tgt_lang, path)
    return adopted


def with_checkpoint_model(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``model`` set to the config the ``init_from`` model was built
    from (unless the command line names one), so that run names, tags and
    logs name the model that actually runs, not the default ``model=``."""
    if cfg.stage.name not in FROM_CHECKPOINT or not cfg.init_from or not Path(str(cfg.init_from)).is_file():
        return cfg
    if cfg.stage.name == "distill" and cfg.distill.from_scratch:
        return cfg
    overrides = command_line_overrides()
    if overrides is None or _names(overrides, "model"):
        return cfg
    built = trained_config(str(cfg.init_from)).get("model")
    if not built:
        return cfg
    adopted = copy.deepcopy(cfg)
    adopted.model = OmegaConf.merge(OmegaConf.structured(ModelConfig), built)
    return adopted


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def write_result(directory: Path, result: StageResult) -> None:
    atomic_write_text(directory / RESULT_FILE, json.dumps(asdict(result), indent=2, default=str))


def read_result(directory: Path) -> Optional[StageResult]:
    path = Path(directory) / RESULT_FILE
    if not path.is_file():
        return None
    return StageResult(**json.loads(path.read_text()))


LOCK_FILE = ".pet.lock"
RUN_ID_FILE = "mlflow_run.json"


@contextlib.contextmanager
def run_lock(cfg: DictConfig) -> Iterator[None]:
    """One process per run folder: a second identical command would train on
    and interleave its logs with the first. Released when the process ends, so
    a killed job leaves no stale lock."""
    if not is_main_process():
        yield
        return
    import fcntl  # POSIX; pet's run folders are on Linux/macOS filesystems

    rd = run_dir(cfg)
    with open(rd / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(
                f"{rd} is in use by another pet process ({holder}); wait for it to finish, "
                "or give this run its own folder (paths.run_dir=...)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _close_stale_run(tracker: NullTracker, rd: Path, resume_run_id: Optional[str]) -> None:
    """A run this folder started before, left RUNNING by a process that was
    killed (kill -9: no handler ran) and not being resumed now, is marked KILLED."""
    path = rd / RUN_ID_FILE
    if not path.is_file():
        return
    with contextlib.suppress(ValueError, OSError):
        stale = json.loads(path.read_text()).get("run_id")
        if stale and stale != resume_run_id:
            tracker.close_if_running(stale, "KILLED")


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
    if run_id and main:
        rd = run_dir(cfg)
        _close_stale_run(tracker, rd, resume_run_id)
        atomic_write_text(rd / RUN_ID_FILE, json.dumps({"run_id": run_id}))
    if run_id and not resume_run_id:
        tracker.log_params(resolved_config(cfg))
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
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


def announce(cfg: DictConfig, result: StageResult) -> None:
    """Say where a finished stage left its work, and point ``latest`` at it.

    ``<output_root>/runs/<run_name>/latest`` links the stage's newest run
    folder, so ``init_from=outputs/runs/pretrain/latest/checkpoint_best.pt``
    finds a model without copying its folder name.
    """
    if not is_main_process():
        return
    rd = Path(cfg.paths.run_dir).resolve()
    runs = (Path(cfg.paths.output_root) / "runs" / str(cfg.run_name)).resolve()
    if rd.parent == runs and rd.is_dir():
        link = runs / "latest"
        tmp = runs / f".latest-{os.getpid()}"
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(rd.name)
            os.replace(tmp, link)
    print(f"\n{result.stage} finished: {result.metric_name} = {result.metric}\n  run folder: {rd}", flush=True)
    if result.checkpoint:
        print(f"  checkpoint: {result.checkpoint}", flush=True)
