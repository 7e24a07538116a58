"""Carry a long benchmark's state to another machine through the repository.

A benchmark that needs many sessions keeps its state folder on the machine
that runs it; when that machine is replaced between sessions, every CPU-hour
in it is gone and the run starts again from nothing. :func:`pack` writes the
least that lets another machine go on, small enough to commit:

- ``commits.json`` (which commit ran what, when), every finished stage's
  ``result.json``, and ``trainer.json`` (update count,
  epoch curve: what the report and later stages read of a finished run);
- the checkpoints that later stages start from, whole in float32 (exact), less
  the optimizer moments unless the consumer continues that optimizer;
- each unfinished training stage's ``checkpoint_last.pt`` (and its
  ``checkpoint_best.pt`` when that is an earlier update) with float16 weights
  and no optimizer moments. The run goes on as fairseq's ``--reset-optimizer``
  would have it: same update count, LR schedule, epoch, data position and RNG,
  fresh Adam moments, weights rounded to float16 once.

:func:`unpack` restores those files into a state folder, never over a stage
that folder already has, so it is safe to call at every start. Absolute paths
into the state folder (result.json's checkpoint, a checkpoint's config and
pruning chain origin, ...) are stored relative to it and rewritten for
wherever the state folder is now.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pet.checkpoint import load_checkpoint
from pet.data.fileio import atomic_write_text, atomic_write_with

OUT_TOKEN = "<state folder>/"  # stands for the state folder's path (with its "/") in carried files
MANIFEST = "carried.json"
PROVENANCE = ("commits.json",)  # state-folder files that say how the results came about


@dataclass(frozen=True)
class CarryPolicy:
    """What later stages need of a finished stage (by its name relative to the state folder)."""

    needs_checkpoint: Callable[[str], bool]
    needs_optimizer: Callable[[str], bool] = lambda name: False


def _stage_dirs(out: Path) -> list[Path]:
    found = {p.parent for pattern in ("result.json", "checkpoint_last.pt") for p in out.rglob(pattern)}
    return sorted(d for d in found if "outputs" not in d.relative_to(out).parts)


def _rewrite(value: Any, old: str, new: str) -> Any:
    """``value`` with ``old`` replaced by ``new`` in every string inside it (tensors untouched)."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _rewrite(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rewrite(v, old, new) for v in value)
    return value


def _relocated(ckpt: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A checkpoint's paths (its config, the pruning chain's origin, ...) moved from ``old`` to ``new``."""
    return {k: v if k in ("model", "optimizer", "rng") else _rewrite(v, old, new) for k, v in ckpt.items()}


def _slim(ckpt: dict[str, Any], half: bool, keep_optimizer: bool) -> dict[str, Any]:
    slim = dict(ckpt)
    if half:
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    if "optimizer" in ckpt and not keep_optimizer:
        slim["optimizer"] = {"state": {}, "param_groups": ckpt["optimizer"]["param_groups"]}
    slim["carried"] = {"weights": "float16" if half else "float32",
                       "optimizer_moments": "kept" if keep_optimizer else "reset"}
    return slim


def _restore(path: Path, out: Path) -> dict[str, Any]:
    ckpt = _relocated(torch.load(path, map_location="cpu", weights_only=True), OUT_TOKEN, f"{out}/")
    ckpt["model"] = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return ckpt


def _write_slim(ckpt: dict[str, Any], dest: Path, out: Path, half: bool, keep_optimizer: bool) -> None:
    slim = _relocated(_slim(ckpt, half=half, keep_optimizer=keep_optimizer), f"{out}/", OUT_TOKEN)
    atomic_write_with(dest, lambda tmp: torch.save(slim, tmp))


def pack(out: Path, carry: Path, policy: CarryPolicy) -> list[str]:
    """Write ``out``'s carryable state to ``carry`` (in place of the earlier carry, whose stages ``out``
    lacks it keeps); returns one line per stage."""
    staging = carry.with_name(carry.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    lines: list[str] = []
    manifest: dict[str, Any] = {}
    for stage in _stage_dirs(out):
        name = stage.relative_to(out).as_posix()
        dest = staging / name
        dest.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {}
        last = stage / "checkpoint_last.pt"
        last_state = load_checkpoint(last) if last.exists() else None  # loaded once: record and carried copy
        if last_state is not None:
            trainer = last_state["trainer"]
            atomic_write_text(dest / "trainer.json", json.dumps(_rewrite(trainer, f"{out}/", OUT_TOKEN)))
            entry["updates"] = trainer["num_updates"]
        result = stage / "result.json"
        if result.exists():
            atomic_write_text(dest / "result.json", result.read_text().replace(f"{out}/", OUT_TOKEN))
            entry["finished"] = True
            checkpoint = json.loads(result.read_text()).get("checkpoint")
            if checkpoint and policy.needs_checkpoint(name) and Path(checkpoint).is_file():
                source = Path(checkpoint)
                _write_slim(load_checkpoint(source), dest / source.name, out, half=False,
                            keep_optimizer=policy.needs_optimizer(name))
                entry["checkpoint"] = source.name
        elif last_state is not None:
            entry["finished"] = False
            ckpts = {last.name: last_state}
            best = stage / "checkpoint_best.pt"
            best_state = load_checkpoint(best) if best.exists() else None
            if best_state is not None and best_state["trainer"]["num_updates"] != entry["updates"]:
                ckpts[best.name] = best_state
            for ckpt_name, state in ckpts.items():
                _write_slim(state, dest / ckpt_name, out, half=True, keep_optimizer=False)
            entry["checkpoints"] = list(ckpts)
        manifest[name] = entry
        size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
        lines.append(f"{name}: {'finished' if entry['finished'] else 'at update ' + str(entry['updates'])}, "
                     f"{', '.join(sorted(f.name for f in dest.iterdir()))} ({size:.1f} MiB)")
    # stages carried earlier that this state folder lacks stay carried (e.g. packed before unpacking)
    earlier = json.loads((carry / MANIFEST).read_text()) if (carry / MANIFEST).exists() else {}
    for name, entry in earlier.items():
        if name not in manifest:
            shutil.copytree(carry / name, staging / name)
            manifest[name] = entry
            lines.append(f"{name}: kept from the earlier carry")
    for name in PROVENANCE:
        if (out / name).exists():
            shutil.copyfile(out / name, staging / name)
        elif (carry / name).exists():
            shutil.copyfile(carry / name, staging / name)
    atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    old = carry.with_name(carry.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if carry.exists():
        carry.rename(old)
    staging.rename(carry)
    shutil.rmtree(old, ignore_errors=True)
    return lines


def unpack(carry: Path, out: Path) -> list[str]:
    """Restore each carried stage that ``out`` does not have yet; returns one line per restored stage."""
    manifest_path = carry / MANIFEST
    if not manifest_path.exists():
        return []
    restored = []
    for name in PROVENANCE:
        if (carry / name).exists() and not (out / name).exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(carry / name, out / name)
    for name, entry in json.loads(manifest_path.read_text()).items():
        stage, source = out / name, carry / name
        if (stage / "result.json").exists() or (stage / "checkpoint_last.pt").exists():
            continue  # this machine has the stage already: its own state is at least as far
        stage.mkdir(parents=True, exist_ok=True)
        if (source / "trainer.json").exists():
            atomic_write_text(stage / "trainer.json", (source / "trainer.json").read_text().replace(OUT_TOKEN, f"{out}/"))
        # checkpoint_last.pt, then result.json, last: either marks the stage as present on this machine,
        # so an unpack cut short is redone at the next start
        ckpts = [*entry.get("checkpoints", []), *([entry["checkpoint"]] if "checkpoint" in entry else [])]
        for ckpt in sorted(ckpts, key=lambda name: name == "checkpoint_last.pt"):
            state = _restore(source / ckpt, out)
            atomic_write_with(stage / ckpt, lambda tmp, s=state: torch.save(s, tmp))
        if (source / "result.json").exists():
            atomic_write_text(stage / "result.json", (source / "result.json").read_text().replace(OUT_TOKEN, f"{out}/"))
        restored.append(f"{name}: {'finished' if entry.get('finished') else 'resumes at update ' + str(entry['updates'])}")
    return restored
