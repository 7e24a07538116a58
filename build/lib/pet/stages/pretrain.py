"""stage=pretrain (from scratch) and stage=finetune (from ``init_from``).

Both are plain label-smoothed CE training; finetune continues an existing
model, whatever its shape (a pruned model's irregular shape comes from its
checkpoint), with a fresh optimizer. Re-running the same command resumes from
``checkpoint_last.pt`` in the run folder; a finished run is a no-op.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.errors import CheckpointError, ConfigError
from pet.models.spec import TransformerSpec, fresh_spec, spec_from_config
from pet.models.transformer import TransformerModel
from pet.runtime import configure_threads, is_main_process, seed_everything, seed_rank, select_device
from pet.stages.common import StageResult, check_same_vocab, load_data, origin_teacher, resolved_config, run_dir, tracked_run, write_result
from pet.training.schedule import continuation_schedule
from pet.training.trainer import Trainer

log = logging.getLogger(__name__)


def build_initial_model(cfg: DictConfig, data) -> TransformerModel:
    if cfg.init_from:
        ckpt = load_checkpoint(cfg.init_from)
        check_same_vocab(ckpt, data, cfg.init_from)
        return model_from_checkpoint(ckpt)
    if cfg.stage.name == "finetune":
        raise ConfigError("stage=finetune needs init_from=<checkpoint to finetune>")
    if cfg.model.shape_from:
        shape = load_checkpoint(cfg.model.shape_from)
        check_same_vocab(shape, data, cfg.model.shape_from)
        log.info("model of the layer shapes of %s, randomly initialised", cfg.model.shape_from)
        return TransformerModel(fresh_spec(TransformerSpec.from_dict(shape["spec"])))
    spec = spec_from_config(cfg.model, len(data.src_dict), len(data.tgt_dict), data.tgt_dict.pad)
    return TransformerModel(spec)


def finetune_kd_loss(cfg: DictConfig, init_ckpt: dict, data, device):
    """With ``pruning.finetune_kd``: distil from the pruning chain's unpruned
    origin while finetuning (pruning.kd_alpha, pruning.kd_temperature); else
    None (plain label-smoothed CE)."""
    if not cfg.pruning.finetune_kd:
        return None
    from pet.pruning.kd import DistillationLoss

    history = init_ckpt.get("pruning_history") or []
    if not history:
        raise ConfigError(
            f"pruning.finetune_kd=true distils from the pruning chain's unpruned model, but {cfg.init_from} "
            "has no pruning history; finetune a prune run's checkpoint_pruned.pt, or set pruning.finetune_kd=false"
        )
    teacher = origin_teacher(cfg.init_from, history, data, "pruning.finetune_kd=false")
    p = cfg.pruning
    return DistillationLoss(teacher.to(device), p.kd_alpha, p.kd_temperature, cfg.optim.label_smoothing,
                            data.tgt_dict.pad)


def best_checkpoint_state(path: Path, state) -> dict:
    """The trainer record saved with ``path`` (the model it describes), or this
    run's state when no such file was written (rank > 0, no validation yet)."""
    if path.is_file() and is_main_process():
        return load_checkpoint(path)["trainer"]
    return {"best_valid_loss": state.best_valid_loss, "best_valid_bleu": state.best_valid_bleu}


def resume_checkpoint(cfg: DictConfig, directory: Path):
    last = directory / "checkpoint_last.pt"
    if cfg.trainer.reset or not last.exists():
        return None
    log.info("resuming from %s", last)
    return load_checkpoint(last)


def run(cfg: DictConfig) -> StageResult:
    rd = run_dir(cfg)
    configure_threads(cfg.trainer.num_threads)
    device = select_device(cfg.trainer.device)
    data = load_data(cfg)
    resume = resume_checkpoint(cfg, rd)
    seed_everything(cfg.trainer.seed)
    # Same initial weights on every rank (DDP also broadcasts rank 0's), then
    # rank-specific dropout streams.
    model = build_initial_model(cfg, data)
    seed_rank(cfg.trainer.seed)
    if resume is not None and resume["spec"] != model.spec.to_dict():
        raise CheckpointError(
            f"{rd / 'checkpoint_last.pt'} holds a different model shape than this command asks for; "
            "use another run folder (paths.run_dir=...) or trainer.reset=true to start over"
        )
    log.info("model %s: %s parameters", cfg.model.name, f"{model.num_parameters():,}")
    # A pruned model keeps its pruning history through finetuning, so reports
    # (and later prune runs) still know the unpruned origin.
    init_ckpt = load_checkpoint(cfg.init_from) if cfg.init_from and cfg.stage.name == "finetune" else None
    history = (init_ckpt or {}).get("pruning_history")
    extra = {"config": resolved_config(cfg), **({"pruning_history": history} if history else {})}
    # finetune continues a trained model: its own short warm-up to the rate the
    # input's training ended at, not pretraining's warm-up from 1e-7.
    schedule = continuation_schedule(cfg.optim, init_ckpt) if cfg.stage.name == "finetune" else None
    loss_fn = finetune_kd_loss(cfg, init_ckpt, data, device) if cfg.stage.name == "finetune" else None
    with tracked_run(cfg, resume_run_id=resume.get("mlflow_run_id") if resume else None) as tracker:
        trainer = Trainer.for_data(
            data,
            resume=resume,
            cfg=cfg,
            model=model,
            run_dir=rd,
            device=device,
            tracker=tracker,
            checkpoint_extra=lambda: extra,
            schedule=schedule,
            loss_fn=loss_fn,
        )
        state = trainer.fit()
        # What checkpoint_best.pt holds (possibly an earlier run's better model), not this run's best.
        best = best_checkpoint_state(rd / "checkpoint_best.pt", state)
        result = StageResult(
            stage=cfg.stage.name,
            metric_name="best_valid_loss",
            metric=best["best_valid_loss"],
            checkpoint=str(rd / "checkpoint_best.pt"),
            metrics={
                "best_valid_loss": best["best_valid_loss"],
                "last_valid_loss": state.last_valid_loss,
                **({"best_valid_bleu": best["best_valid_bleu"]} if best.get("best_valid_bleu", -math.inf) > -math.inf else {}),
                "num_updates": state.num_updates,
                "epochs_completed": state.epoch - 1,
                "train_seconds": state.train_seconds,
                "train_tokens_per_s": state.target_tokens / max(state.train_seconds, 1e-9),
                "stop_reason": state.stop_reason,
                "parameters": model.num_parameters(),
                "valid_curve": state.curve,
            },
            run_id=tracker.run_id,
        )
        if history and is_main_process():
            from pet.pruning.report import finetune_report

            best = model_from_checkpoint(load_checkpoint(rd / "checkpoint_best.pt")).to(device)
            result.metrics.update(finetune_report(cfg, data, init_ckpt, best, device, tracker, rd))
        write_result(rd, result)
    return result
