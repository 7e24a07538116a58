"""stage=finetune: continue training a model from ``init_from``, whatever its shape.

A pruned model's irregular shape comes from its checkpoint, and it keeps its
pruning history through finetuning, so reports (and later prune runs) still
know the unpruned origin. The optimizer is fresh; the LR schedule continues
the input's (a short warm-up to the rate its training ended at, not
pretraining's warm-up from 1e-7). ``pruning.finetune_kd`` distils from the
pruning chain's unpruned model meanwhile. Re-running the same command resumes
from ``checkpoint_last.pt``; a finished run is a no-op.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.distill.losses import DistillationLoss
from pet.errors import ConfigError
from pet.pruning.report import finetune_report
from pet.runtime import is_main_process, seed_everything, seed_rank
from pet.stages.common import StageResult, finish_stage, origin_teacher, resolved_config, setup_stage
from pet.stages.fit import best_checkpoint_state, check_resume_shape, make_trainer, resume_checkpoint, training_metrics
from pet.stages.lifecycle import tracked_run
from pet.training.schedule import continuation_schedule

log = logging.getLogger(__name__)


def finetune_kd_loss(cfg: DictConfig, init_ckpt: dict, data, device: torch.device) -> Optional[DistillationLoss]:
    """With ``pruning.finetune_kd``: distil from the pruning chain's unpruned
    origin while finetuning (pruning.kd_alpha, pruning.kd_temperature); else
    None (plain label-smoothed CE)."""
    if not cfg.pruning.finetune_kd:
        return None
    history = init_ckpt.get("pruning_history") or []
    if not history:
        raise ConfigError(
            f"pruning.finetune_kd=true distils from the pruning chain's unpruned model, but {cfg.init_from} "
            "has no pruning history; finetune a prune run's checkpoint_pruned.pt, or set pruning.finetune_kd=false"
        )
    teacher = origin_teacher(cfg.init_from, history, data, "pruning.finetune_kd=false")
    p = cfg.pruning
    return DistillationLoss(teacher.to(device) if p.kd_alpha > 0 else None, data.tgt_dict.pad, alpha=p.kd_alpha,
                            beta=0.0, temperature=p.kd_temperature, label_smoothing=cfg.optim.label_smoothing)


def run(cfg: DictConfig) -> StageResult:
    setup = setup_stage(cfg, checkpoint=True,
                        missing_checkpoint="stage=finetune needs init_from=<checkpoint to finetune>")
    init = setup.checkpoint
    resume = resume_checkpoint(cfg, setup.run_dir)
    seed_everything(cfg.trainer.seed)
    model = model_from_checkpoint(init)
    seed_rank(cfg.trainer.seed)
    check_resume_shape(resume, model, setup.run_dir)
    log.info("model %s: %s parameters", cfg.model.name, f"{model.num_parameters():,}")
    history = init.get("pruning_history")
    extra: dict[str, Any] = {"config": resolved_config(cfg), **({"pruning_history": history} if history else {})}
    schedule = continuation_schedule(cfg.optim, init)
    loss_fn = finetune_kd_loss(cfg, init, setup.data, setup.device)
    best_path = setup.run_dir / "checkpoint_best.pt"
    with tracked_run(cfg, resume_run_id=resume.get("mlflow_run_id") if resume else None) as tracker:
        trainer = make_trainer(cfg, setup, model, tracker, resume=resume, extra=lambda: extra, schedule=schedule,
                               loss_fn=loss_fn)
        state = trainer.fit()
        # What checkpoint_best.pt holds (possibly an earlier run's better model), not this run's best.
        best = best_checkpoint_state(best_path, state)
        result = StageResult(
            stage="finetune",
            metric_name="best_valid_loss",
            metric=best["best_valid_loss"],
            checkpoint=str(best_path),
            metrics={**training_metrics(state, best, model.num_parameters()), "valid_curve": state.curve},
        )
        if history and is_main_process():
            best_model = model_from_checkpoint(load_checkpoint(best_path)).to(setup.device)
            result.metrics.update(finetune_report(cfg, setup.data, init, best_model, setup.device, tracker,
                                                  setup.run_dir))
        return finish_stage(cfg, result, tracker)
