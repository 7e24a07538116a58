"""Loading a distillation teacher and checking it fits the student."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.errors import CheckpointError

log = logging.getLogger(__name__)


def load_teacher(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """Teacher model (and its checkpoint) from a pet checkpoint file."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"teacher checkpoint {path} does not exist; set distill.teacher=<checkpoint .pt> "
            "(warm-up: the trained baseline, kd: the trained tiny teacher)"
        )
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    return model, ckpt


def check_compatible(student: nn.Module, teacher: nn.Module, teacher_path: str) -> None:
    """Logits are compared position by position: the vocabularies must agree."""
    s, t = student.spec, teacher.spec
    if (s.encoder.vocab_size, s.decoder.vocab_size) != (t.encoder.vocab_size, t.decoder.vocab_size):
        raise CheckpointError(
            f"teacher {teacher_path} has {t.encoder.vocab_size}/{t.decoder.vocab_size} types, the student "
            f"{s.encoder.vocab_size}/{s.decoder.vocab_size}; both must be trained on the same data"
        )
    if s.padding_idx != t.padding_idx:
        raise CheckpointError(f"teacher {teacher_path} uses padding index {t.padding_idx}, the student {s.padding_idx}")
