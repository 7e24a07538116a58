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
from pet.distill.losses import DistillationLoss, WarmupLoss
from pet.distill.teacher import check_compatible, load_teacher
from pet.errors import ConfigError
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel
from pet.runtime import seed_everything, seed_rank
from pet.stages.common import (
    StageResult,
    check_same_vocab,
    finish_stage,
    resolve_step_reference,
    resolved_config,
    setup_stage,
)
from pet.stages.fit import best_checkpoint_state, check_resume_shape, make_trainer, resume_checkpoint, training_metrics
from pet.stages.lifecycle import tracked_run

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


def config_checkpoints(cfg: DictConfig) -> tuple[Optional[str], Optional[str]]:
    """(data, model) config sources: the student's ``init_from``, or for a
    student from scratch the teacher's data and this command's ``model=``."""
    if cfg.init_from and not cfg.distill.from_scratch:
        return str(cfg.init_from), str(cfg.init_from)
    teacher = str(cfg.distill.teacher) if cfg.distill.teacher else None
    return (teacher if teacher and not teacher.startswith("@") else None), None


def teacher_path(cfg: DictConfig, run_dir: Path) -> str:
    """``distill.teacher`` as a checkpoint path (``@step``: an earlier pipeline step's)."""
    if not cfg.distill.teacher:
        raise ConfigError(
            "stage=distill needs a teacher: distill.teacher=<checkpoint .pt> (warm-up: the baseline; "
            "kd: the tiny teacher), or distill.teacher=@<step> inside a pipeline"
        )
    return resolve_step_reference(cfg.distill.teacher, run_dir, "distill.teacher")


def make_loss(cfg: DictConfig, student: TransformerModel, teacher: Optional[TransformerModel], pad: int):
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
    setup = setup_stage(cfg)
    rd, data, device = setup.run_dir, setup.data, setup.device
    mode = cfg.distill.mode
    teacher, t_path = None, None
    if mode != "none":
        t_path = teacher_path(cfg, rd)
        teacher, t_ckpt = load_teacher(t_path)
        check_same_vocab(t_ckpt, data, t_path)
    resume = resume_checkpoint(cfg, rd)
    seed_everything(cfg.trainer.seed)
    init = init_checkpoint(cfg)
    student = build_student(cfg, data, init)
    seed_rank(cfg.trainer.seed)
    check_resume_shape(resume, student, rd)
    if teacher is not None:
        check_compatible(student, teacher, t_path)
        teacher.to(device)
    loss_fn = make_loss(cfg, student, teacher, _pad(data.tgt_dict))
    n_student = student.num_parameters()
    n_teacher = teacher.num_parameters() if teacher is not None else None
    log.info(
        "distill mode=%s | student %s parameters | teacher %s (%s parameters)",
        mode,
        f"{n_student:,}",
        t_path,
        f"{n_teacher:,}" if n_teacher else "-",
    )

    def extra() -> dict[str, Any]:
        return {"config": resolved_config(cfg), "distill": {"mode": mode, "teacher": t_path}}

    with tracked_run(cfg, resume_run_id=resume.get("mlflow_run_id") if resume else None) as tracker:
        if resume is None:
            tracker.set_tags({"distill_mode": mode, "teacher": str(t_path)})
        trainer = make_trainer(cfg, setup, student, tracker, resume=resume, extra=extra, loss_fn=loss_fn)
        if resume is None and init is not None and cfg.distill.continue_schedule:
            trainer.continue_schedule_from(init, cfg.init_from)
            log.info("continuing the optimizer and LR schedule of %s from update %d", cfg.init_from,
                     trainer.state.num_updates)
        state = trainer.fit()
        # The warm-up trains a fixed number of epochs on another task, so its
        # validation CE is no selection criterion: it hands on its last model.
        final = rd / ("checkpoint_last.pt" if mode == "warmup" else "checkpoint_best.pt")
        best = best_checkpoint_state(rd / "checkpoint_best.pt", state)
        metrics = training_metrics(state, best, n_student)
        metrics.pop("best_valid_bleu", None)
        result = StageResult(
            stage="distill",
            metric_name="last_valid_loss" if mode == "warmup" else "best_valid_loss",
            metric=state.last_valid_loss if mode == "warmup" else best["best_valid_loss"],
            checkpoint=str(final),
            metrics={**metrics, "teacher_parameters": n_teacher, "mode": mode, "teacher": t_path},
        )
        return finish_stage(cfg, result, tracker)
