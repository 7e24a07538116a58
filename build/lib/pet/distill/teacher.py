"""Finding, loading and checking a distillation teacher."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from torch import nn

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


def resolve_teacher_path(value: Optional[str], run_dir: Path) -> str:
    """``distill.teacher`` as a checkpoint path.

    ``@name`` names an earlier step of the same pipeline: steps run in
    ``<pipeline run_dir>/<step name>``, so it is the checkpoint recorded in the
    sibling folder's result.json (or its checkpoint_best.pt).
    """
    if not value:
        raise ConfigError(
            "stage=distill needs a teacher: distill.teacher=<checkpoint .pt> (warm-up: the baseline; "
            "kd: the tiny teacher), or distill.teacher=@<step> inside a pipeline"
        )
    value = str(value)
    if not value.startswith("@"):
        return value
    from pet.stages.common import read_result

    name = value[1:]
    step_dir = Path(run_dir).parent / name
    result = read_result(step_dir)
    if result is not None and result.checkpoint:
        return result.checkpoint
    best = step_dir / "checkpoint_best.pt"
    if best.is_file():
        return str(best)
    raise ConfigError(
        f"distill.teacher={value} names no finished pipeline step: {step_dir} has no result.json or "
        "checkpoint_best.pt (steps run in <pipeline run_dir>/<step name>); pass a checkpoint path instead"
    )


def load_teacher(path: str, data: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Teacher model from a pet checkpoint; vocabularies checked against ``data``."""
    from pet.stages.common import check_same_vocab

    if not Path(path).is_file():
        raise CheckpointError(
            f"teacher checkpoint {path} does not exist; set distill.teacher=<checkpoint .pt> "
            "(warm-up: the trained baseline, kd: the trained tiny teacher)"
        )
    ckpt = load_checkpoint(path)
    if data is not None:
        check_same_vocab(ckpt, data, path)
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
