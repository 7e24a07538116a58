"""Training a model with the shared Trainer, as pretrain, finetune and distill do.

Resuming from ``checkpoint_last.pt``, refusing a run folder that holds another
model shape, and reporting what ``checkpoint_best.pt`` holds are the same for
every stage that trains; the stages differ in the model they start from, the
objective and the LR schedule.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint
from pet.errors import CheckpointError
from pet.models.transformer import TransformerModel
from pet.runtime import is_main_process
from pet.stages.common import StageSetup
from pet.training.trainer import Trainer

log = logging.getLogger(__name__)


def resume_checkpoint(cfg: DictConfig, directory: Path) -> Optional[dict[str, Any]]:
    """The run folder's ``checkpoint_last.pt`` to resume from (None: start fresh)."""
    last = directory / "checkpoint_last.pt"
    if cfg.trainer.reset or not last.exists():
        return None
    log.info("resuming from %s", last)
    return load_checkpoint(last)


def check_resume_shape(resume: Optional[dict[str, Any]], model: TransformerModel, directory: Path) -> None:
    """A run folder resumes the model it was started with, not another shape."""
    if resume is not None and resume["spec"] != model.spec.to_dict():
        raise CheckpointError(
            f"{directory / 'checkpoint_last.pt'} holds a different model shape than this command asks for; "
            "use another run folder (paths.run_dir=...) or trainer.reset=true to start over"
        )


def best_checkpoint_state(path: Path, state) -> dict:
    """The trainer record saved with ``path`` (the model it describes), or this
    run's state when no such file was written (rank > 0, no validation yet)."""
    if path.is_file() and is_main_process():
        return load_checkpoint(path)["trainer"]
    return {"best_valid_loss": state.best_valid_loss, "best_valid_bleu": state.best_valid_bleu}


def training_metrics(state, best: dict[str, Any], parameters: int) -> dict[str, Any]:
    """What a training stage reports: the best and last validation loss, the
    budget it used and how it stopped."""
    return {
        "best_valid_loss": best["best_valid_loss"],
        "last_valid_loss": state.last_valid_loss,
        **({"best_valid_bleu": best["best_valid_bleu"]} if best.get("best_valid_bleu", -math.inf) > -math.inf else {}),
        "num_updates": state.num_updates,
        "epochs_completed": state.epoch - 1,
        "train_seconds": state.train_seconds,
        "train_tokens_per_s": state.target_tokens / max(state.train_seconds, 1e-9),
        "stop_reason": state.stop_reason,
        "parameters": parameters,
    }


def make_trainer(cfg: DictConfig, setup: StageSetup, model: TransformerModel, tracker, *,
                 resume: Optional[dict[str, Any]], extra: Callable[[], dict[str, Any]],
                 schedule=None, loss_fn=None) -> Trainer:
    """The shared Trainer over the setup's data, resuming ``resume`` if given."""
    return Trainer.for_data(
        setup.data,
        resume=resume,
        cfg=cfg,
        model=model,
        run_dir=setup.run_dir,
        device=setup.device,
        tracker=tracker,
        checkpoint_extra=extra,
        schedule=schedule,
        loss_fn=loss_fn,
    )
