"""Which checkpoint files a training run keeps in its folder, besides
checkpoint_last.pt: checkpoint_best.pt, checkpoint<epoch>.pt of the last epochs
and checkpoint.best_<metric>_<value>.pt of the best ones (fairseq's file names,
what checkpoint averaging reads). Writing and reading a checkpoint file is
:mod:`pet.checkpoint`'s job."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional

from pet.checkpoint import load_checkpoint
from pet.errors import CheckpointError

log = logging.getLogger(__name__)


def better(metric: str, value: float, than: float) -> bool:
    """Whether ``value`` beats ``than``: higher BLEU, or lower loss."""
    return value > than if metric == "bleu" else value < than


def epoch_checkpoints(run_dir: Path) -> list[tuple[Path, int]]:
    """(path, epoch) of every checkpoint<epoch>.pt in ``run_dir``, oldest first."""
    found = []
    for path in Path(run_dir).glob("checkpoint[0-9]*.pt"):
        suffix = path.stem[len("checkpoint"):]
        if suffix.isdigit():
            found.append((path, int(suffix)))
    return sorted(found, key=lambda item: item[1])


def best_checkpoints(run_dir: Path, metric: str = "loss") -> list[tuple[Path, float]]:
    """(path, value) of every checkpoint.best_<metric>_<value>.pt, best first
    (lowest loss, highest BLEU)."""
    prefix = f"checkpoint.best_{metric}_"
    found = []
    for path in Path(run_dir).glob(f"{prefix}*.pt"):
        try:
            found.append((path, float(path.stem[len(prefix):])))
        except ValueError:
            continue
    return sorted(found, key=lambda item: -item[1] if metric == "bleu" else item[1])


def keep_epoch_checkpoints(run_dir: Path, tcfg: Any, epoch: int, value: float, save: Callable[[str], Path]) -> None:
    """After ``epoch`` (validated at ``value`` by trainer.best_checkpoint_metric):
    ``save`` checkpoint<epoch>.pt and delete those older than the last
    ``tcfg.keep_last_epochs``; ``save`` checkpoint.best_<metric>_<value>.pt if
    ``value`` is among the ``tcfg.keep_best_checkpoints`` best and delete the
    one it displaces. 0 keeps none of a kind."""
    if tcfg.keep_last_epochs > 0:
        save(f"checkpoint{epoch}.pt")
        for path, n in epoch_checkpoints(run_dir):
            if n <= epoch - tcfg.keep_last_epochs:
                path.unlink(missing_ok=True)
    if tcfg.keep_best_checkpoints > 0:
        metric, n = tcfg.best_checkpoint_metric, tcfg.keep_best_checkpoints
        best = best_checkpoints(run_dir, metric)
        if len(best) < n or better(metric, value, best[n - 1][1]):
            save(f"checkpoint.best_{metric}_{value:.4f}.pt")
            for path, _ in best_checkpoints(run_dir, metric)[n:]:
                path.unlink(missing_ok=True)


def best_on_disk(run_dir: Path, metric: str) -> Optional[float]:
    """The validation ``metric`` value recorded in ``run_dir``'s
    checkpoint_best.pt, or None when there is none (or it is unreadable, or it
    holds no finite value). A fresh start in a folder that already holds one
    (say, after a corrupt checkpoint_last.pt was moved aside) replaces that
    model only by a better one."""
    path = Path(run_dir) / "checkpoint_best.pt"
    if not path.is_file():
        return None
    try:
        trainer = load_checkpoint(path).get("trainer") or {}
    except CheckpointError as e:
        log.warning("%s is unreadable (%s); a new best model will replace it", path, e)
        return None
    value = trainer.get("best_valid_bleu" if metric == "bleu" else "best_valid_loss")
    if value is None or not math.isfinite(value):
        return None
    log.warning("starting from scratch in %s, which holds checkpoint_best.pt from an earlier run (valid %s %.4f): "
                "it is replaced only by a better model", run_dir, metric, value)
    return float(value)
