"""stage=distill: PET's warm-up (``distill=warmup``) and distillation (``distill=kd``).

    # warm-up: the student learns the baseline's 4-class token labels
    pet stage=distill distill=warmup model=pet_student distill.teacher=<baseline .pt>
    # distillation from the tiny teacher, starting from the warmed-up student
    pet stage=distill distill=kd init_from=<warm-up .pt> distill.teacher=<tiny teacher .pt>

The student comes from ``init_from`` (a checkpoint, whatever its shape) or,
without one or with ``distill.from_scratch=true``, from ``model=``. The teacher
comes from ``distill.teacher`` (a path, or ``@step`` inside a pipeline), is
frozen and runs in eval mode without gradients. Training is the shared Trainer
with the objective of :mod:`pet.distill.losses`; every loss term is logged
(``train_kd_ce``, ``train_kd_kl``, ``train_kd_hidden``; ``train_warmup_nll``
and the label fractions ``train_label_*`` in warm-up). Re-running the same
command resumes from ``checkpoint_last.pt``; a finished run is a no-op.

The warm-up hands on ``checkpoint_last.pt`` (it trains a fixed number of epochs
on another task, so its validation CE is not a selection criterion); KD hands
on ``checkpoint_best.pt`` (best validation CE). ``distill=none`` trains the
student with plain CE and needs no teacher (the from-scratch baseline).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.errors import CheckpointError
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel
from pet.runtime import configure_threads, seed_everything, seed_rank, select_device
from pet.stages.common import StageResult, check_same_vocab, load_data, resolved_config, run_dir, tracked_run, write_result
from pet.stages.pretrain import best_checkpoint_state, resume_checkpoint
from pet.training.trainer import Trainer

log = logging.getLogger(__name__)


def _pad(dictionary: Any) -> int:
    pad = dictionary.pad
    return pad() if callable(pad) else pad


def init_checkpoint(cfg: DictConfig) -> Optional[dict[str, Any]]:
    """The checkpoint the student starts from, or None for a random init."""
    if cfg.init_from and not cfg.distill.from_scratch:
        return load_checkpoint(cfg.init_from)
    return None


def build_student(cfg: DictConfig, data: Any, init: Optional[dict[str, Any]] = None) -> TransformerModel:
    if init is not None:
        check_same_vocab(init, data, cfg.init_from)
        log.info("student from %s", cfg.init_from)
        return model_from_checkpoint(init)
    log.info("student from model=%s (random init)", cfg.model.name)
    spec = spec_from_config(cfg.model, len(data.src_dict), len(data.tgt_dict), _pad(data.tgt_dict))
    return TransformerModel(spec)


def make_loss(cfg: DictConfig, student: TransformerModel, teacher: Optional[TransformerModel], pad: int):
    from pet.distill.losses import DistillationLoss, WarmupLoss

    d = cfg.distill
    if d.mode == "warmup":
        return WarmupLoss(
            teacher,
            pad,
            confident_correct=d.confident_correct,
            confident_wrong=d.confident_wrong,
            label_smoothing=d.warmup_label_smoothing,
        )
    if d.mode == "kd":
        return DistillationLoss(
            teacher,
            pad,
            alpha=d.alpha,
            beta=d.beta,
            temperature=d.temperature,
            label_smoothing=cfg.optim.label_smoothing,
            encoder_layer_map=list(d.encoder_layer_map),
            decoder_layer_map=list(d.decoder_layer_map),
            student=student,
        )
    return None  # mode=none: the trainer's own label-smoothed CE


def run(cfg: DictConfig) -> StageResult:
    from pet.distill.teacher import check_compatible, load_teacher, resolve_teacher_path

    rd = run_dir(cfg)
    mode = cfg.distill.mode
    teacher_path = resolve_teacher_path(cfg.distill.teacher, rd) if mode != "none" else None
    configure_threads(cfg.trainer.num_threads)
    device = select_device(cfg.trainer.device)
    data = load_data(cfg)
    teacher = None
    if teacher_path is not None:
        teacher, _ = load_teacher(teacher_path, data)
    resume = resume_checkpoint(cfg, rd)
    seed_everything(cfg.trainer.seed)
    init = init_checkpoint(cfg)
    student = build_student(cfg, data, init)
    seed_rank(cfg.trainer.seed)
    if resume is not None and resume["spec"] != student.spec.to_dict():
        raise CheckpointError(
            f"{rd / 'checkpoint_last.pt'} holds a different model shape than this command asks for; "
            "use another run folder (paths.run_dir=...) or trainer.reset=true to start over"
        )
    if teacher is not None:
        check_compatible(student, teacher, teacher_path)
        teacher.to(device)
    loss_fn = make_loss(cfg, student, teacher, _pad(data.tgt_dict))
    n_student = student.num_parameters()
    n_teacher = teacher.num_parameters() if teacher is not None else None
    log.info(
        "distill mode=%s | student %s parameters | teacher %s (%s parameters)",
        mode,
        f"{n_student:,}",
        teacher_path,
        f"{n_teacher:,}" if n_teacher else "-",
    )

    def extra() -> dict[str, Any]:
        return {"config": resolved_config(cfg), "distill": {"mode": mode, "teacher": teacher_path}}

    with tracked_run(cfg, resume_run_id=resume.get("mlflow_run_id") if resume else None) as tracker:
        if resume is None:
            tracker.set_tags({"distill_mode": mode, "teacher": str(teacher_path)})
        trainer = Trainer.for_data(
            data,
            resume=resume,
            cfg=cfg,
            model=student,
            run_dir=rd,
            device=device,
            tracker=tracker,
            loss_fn=loss_fn,
            checkpoint_extra=extra,
        )
        if resume is None and init is not None and cfg.distill.continue_schedule:
            trainer.continue_schedule_from(init, cfg.init_from)
            log.info("continuing the optimizer and LR schedule of %s from update %d", cfg.init_from, trainer.state.num_updates)
        state = trainer.fit()
        final = rd / ("checkpoint_last.pt" if mode == "warmup" else "checkpoint_best.pt")
        best_loss = best_checkpoint_state(rd / "checkpoint_best.pt", state)["best_valid_loss"]
        metrics = {
            "best_valid_loss": best_loss,
            "last_valid_loss": state.last_valid_loss,
            "num_updates": state.num_updates,
            "epochs_completed": state.epoch - 1,
            "train_seconds": state.train_seconds,
            "train_tokens_per_s": state.target_tokens / max(state.train_seconds, 1e-9),
            "stop_reason": state.stop_reason,
            "parameters": n_student,
            "teacher_parameters": n_teacher,
        }
        tracker.log_metrics({"parameters": float(n_student)}, step=state.num_updates)
        result = StageResult(
            stage="distill",
            metric_name="last_valid_loss" if mode == "warmup" else "best_valid_loss",
            metric=state.last_valid_loss if mode == "warmup" else best_loss,
            checkpoint=str(final),
            metrics={**metrics, "mode": mode, "teacher": teacher_path},
            run_id=tracker.run_id,
        )
        write_result(rd, result)
    return result
