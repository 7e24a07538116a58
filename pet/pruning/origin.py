"""The unpruned model a pruning chain started from: where it is, and loading it.

Every prune run records it in the ``pruning_history`` of the checkpoint it
writes, so later steps of the chain (and finetuning with KD) can distil from
it whatever the chain's intermediate results were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pet.checkpoint import load_checkpoint
from pet.errors import CheckpointError


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
