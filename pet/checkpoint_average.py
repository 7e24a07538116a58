"""Checkpoint averaging (fairseq's ``scripts/average_checkpoints.py``).

The averaged model's parameters are the element-wise mean of the inputs'
(floating-point tensors summed in float64, divided, cast back to their own
dtype; other tensors are the first input's). All inputs must be the same model:
the same spec (shape, layer reuse, attention roles) and the same dictionaries.

Everything else in the result (config, dictionaries, text pipeline, pruning
or distillation history, training counters) is the first input's, as in
fairseq; the selection helpers put the newest (last epochs) or the best (best
checkpoints) first. The optimizer, gradient scaler, RNG and hook states are
left out: they belong to one training run's position, which the average is
not, and a run never resumes from an averaged checkpoint. The result records
its inputs under ``averaged``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from pet.checkpoint import load_checkpoint
from pet.errors import CheckpointError, ConfigError
from pet.pruning.gates import BUFFER_NAMES as GATE_BUFFERS
from pet.training.checkpoints import best_checkpoints, epoch_checkpoints

log = logging.getLogger(__name__)

# Left out of an average: the file format (save_checkpoint writes its own) and
# one training run's resumption state, meaningless for an average.
LEFT_OUT = ("format_version", "optimizer", "scaler", "rng", "hooks")
AVERAGE_NAME = "checkpoint_avg.pt"


def _first_difference(a: Any, b: Any, where: str = "") -> Optional[str]:
    """The first path at which two nested containers differ, as ``a.b[3].c``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{where}.{key}".lstrip(".")
            found = _first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where} (length {len(a)} vs {len(b)})".lstrip(".")
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (where.lstrip(".") or "(value)")


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """A checkpoint dict whose model is the element-wise mean of the models in
    ``paths`` (see module doc); ready for :func:`pet.checkpoint.save_checkpoint`.

    Raises :class:`CheckpointError` when the inputs are not one model."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("average_checkpoints needs at least one checkpoint")
    first: Optional[dict[str, Any]] = None
    sums: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_checkpoint(path)
        if first is None:
            first = state
            for key, value in state["model"].items():
                sums[key] = value.detach().to(torch.float64).clone() if value.is_floating_point() else value
            continue
        where = _first_difference(first["spec"], state["spec"])
        if where is not None:
            raise CheckpointError(
                f"{path} is not the same model as {paths[0]} (their specs differ at {where}); only checkpoints "
                "of one model (one run, or runs of one shape) can be averaged"
            )
        for key, name in (("src_dict", "source dictionary"), ("tgt_dict", "target dictionary")):
            if state[key] != first[key]:
                raise CheckpointError(
                    f"{path} has another {name} than {paths[0]}; only checkpoints trained on the same "
                    "vocabulary can be averaged"
                )
        if set(state["model"]) != set(sums):
            extra = sorted(set(state["model"]) ^ set(sums))[:3]
            raise CheckpointError(f"{path} and {paths[0]} hold different parameters ({', '.join(extra)}, ...)")
        for key, value in state["model"].items():
            if value.shape != sums[key].shape:
                raise CheckpointError(
                    f"{path}: parameter {key} has shape {tuple(value.shape)}, {paths[0]} has {tuple(sums[key].shape)}"
                )
            if key.rsplit(".", 1)[-1] in GATE_BUFFERS and not torch.equal(value, first["model"][key]):
                # Mid-shrink connectivity parameters: a mean would turn removed
                # units back on at fractional strength (neither model).
                raise CheckpointError(
                    f"{path} and {paths[0]} have different connectivity parameters ({key}): they are checkpoints "
                    "of a pruning run while it shrinks; average the finetuned (pruned and removed) checkpoints instead"
                )
            if value.is_floating_point():
                sums[key].add_(value.detach().to(torch.float64))
    assert first is not None
    n = len(paths)
    model = {
        key: (total / n).to(first["model"][key].dtype) if first["model"][key].is_floating_point() else total
        for key, total in sums.items()
    }
    averaged = {k: v for k, v in first.items() if k not in LEFT_OUT}
    averaged["model"] = model
    averaged["averaged"] = {"checkpoints": [str(p) for p in paths], "count": n}
    return averaged


# ------------------------------------------------------------------ selection
def last_epoch_checkpoints(run_dir: str | Path, n: int) -> list[Path]:
    """The ``n`` newest ``checkpoint<epoch>.pt`` of ``run_dir``, newest first."""
    found = epoch_checkpoints(Path(run_dir))
    if len(found) < n:
        have = ", ".join(p.name for p, _ in found) or "none"
        raise CheckpointError(
            f"{run_dir} holds {len(found)} epoch checkpoint(s) (checkpoint<epoch>.pt: {have}), fewer than the "
            f"{n} to average; train with trainer.keep_last_epochs={n} (or more) to keep them"
        )
    return [path for path, _ in reversed(found[-n:])]


def best_n_checkpoints(run_dir: str | Path, n: int, metric: Optional[str] = None) -> list[Path]:
    """The ``n`` best ``checkpoint.best_<metric>_<value>.pt`` of ``run_dir``,
    best first. ``metric`` None: the kind the folder holds (loss or bleu)."""
    run_dir = Path(run_dir)
    if metric is None:
        kinds = [m for m in ("loss", "bleu") if best_checkpoints(run_dir, m)]
        if len(kinds) > 1:
            raise ConfigError(
                f"{run_dir} holds best checkpoints by loss and by bleu; choose with average.metric=loss|bleu"
            )
        metric = kinds[0] if kinds else "loss"
    found = best_checkpoints(run_dir, metric)
    if len(found) < n:
        have = ", ".join(p.name for p, _ in found) or "none"
        raise CheckpointError(
            f"{run_dir} holds {len(found)} best checkpoint(s) by {metric} (checkpoint.best_{metric}_<value>.pt: "
            f"{have}), fewer than the {n} to average; train with trainer.keep_best_checkpoints={n} (or more) "
            f"and trainer.best_checkpoint_metric={metric} to keep them"
        )
    return [path for path, _ in found[:n]]
