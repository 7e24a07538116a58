"""Knowledge distillation from the unpruned model while SRP shrinks units.

loss = (1 − α)·label-smoothed CE + α·T²·KL(p_teacher^T ‖ p_student^T)

summed over non-pad target tokens (the trainer divides by the update's token
count, as for plain CE). T² keeps the soft-target gradients on the same scale
as the hard-target ones whatever the temperature (Hinton et al.). The teacher
is a frozen eval-mode copy of the unpruned model the pruning chain started
from (``pruning.kd_teacher=origin``; ``previous``: this run's input), run
under ``no_grad``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pet.checkpoint import load_checkpoint
from pet.data.batch import Batch
from pet.errors import CheckpointError
from pet.training.criterion import LabelSmoothedCrossEntropy


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationLoss:
    """``loss_fn(model, batch) -> (loss sum, logs)`` for the trainer."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float, label_smoothing: float, padding_idx: int):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"kd alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"kd temperature must be > 0, got {temperature}")
        self.teacher = freeze_teacher(teacher)
        self.alpha, self.temperature = alpha, temperature
        self.ce = LabelSmoothedCrossEntropy(label_smoothing, padding_idx)
        self.padding_idx = padding_idx

    def kd_sum(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        """T²·KL(teacher_T ‖ student_T) summed over non-pad positions."""
        t = self.temperature
        s_lp = F.log_softmax(student_logits.float() / t, dim=-1)
        t_lp = F.log_softmax(teacher_logits.float() / t, dim=-1)
        kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1)
        kl = kl.masked_fill(target.eq(self.padding_idx), 0.0)
        return kl.sum() * (t * t)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        logits, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        ce, nll = self.ce.from_logits(logits, batch.target)
        logs = {"nll_loss": nll.item(), "ce_loss": ce.item()}
        if self.alpha > 0:
            with torch.no_grad():
                teacher_logits, _, _ = self.teacher(batch.src_tokens, batch.prev_output_tokens)
            kd = self.kd_sum(logits, teacher_logits, batch.target)
            loss = (1.0 - self.alpha) * ce + self.alpha * kd
            logs["kd_loss"] = kd.item()
        else:
            loss = ce
        logs["loss"] = loss.item()
        return loss, logs


def origin_checkpoint(source: str, history: list[dict[str, Any]]) -> str:
    """Path of the unpruned model a pruning chain started from: recorded in its
    ``pruning_history``, or ``source`` (the checkpoint being pruned) when there
    is no history yet."""
    if not history:
        return str(Path(source).resolve())
    first = history[0]
    return str(first.get("origin_checkpoint") or Path(first["init_from"]).resolve())


def load_origin(path: str, alternative: str) -> dict[str, Any]:
    """The origin checkpoint, or an error that says where it should be and what
    to set instead (``alternative``)."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"the chain's unpruned model {path} (the KD teacher) is gone; restore it there, or set {alternative}"
        )
    return load_checkpoint(path)
