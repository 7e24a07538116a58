"""Self-contained, atomically written checkpoints.

A checkpoint holds plain containers and tensors only (it loads with
``torch.load(weights_only=True)``): the model spec, weights, vocabularies and
the resolved config that produced it, plus optimizer/scheduler/RNG/data
position for exact resumption. Nothing else is needed to rebuild the model,
nor (``text_pipeline``: tokenizer settings and BPE merge table of its corpus)
to translate raw text with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pet.data.fileio import atomic_write_with
from pet.errors import CheckpointError, brief
from pet.models.spec import TransformerSpec
from pet.models.transformer import TransformerModel

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "spec", "model", "src_dict", "tgt_dict")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    missing = [k for k in REQUIRED_KEYS if k != "format_version" and k not in state]
    if missing:
        raise ValueError(f"refusing to save a checkpoint without {missing}")
    state = {"format_version": FORMAT_VERSION, **state}
    if "text_pipeline" not in state:
        # The corpus' tokenizer settings and BPE merge table, so that the
        # checkpoint alone translates raw text (pet.generation.text_pipeline).
        from pet.generation.text_pipeline import checkpoint_text_state  # noqa: PLC0415 - cycle: text_pipeline imports this module

        text = checkpoint_text_state(state.get("config"))
        if text is not None:
            state["text_pipeline"] = text
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass init_from=<path to a .pt written by pet> "
            "or run the stage that produces it first"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a file it cannot read: all mean the same here
        raise CheckpointError(
            f"{path} is not a readable pet checkpoint: corrupt, truncated or another kind of file "
            f"({type(e).__name__}: {brief(e, 200)}); move it aside and use another checkpoint "
            "(a run folder's checkpoint_best.pt is never replaced by a worse model, so retraining there is safe)"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a pet checkpoint: it holds a {type(state).__name__}, not a checkpoint dict")
    if any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a pet checkpoint (missing keys {[k for k in REQUIRED_KEYS if k not in state]})")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {state['format_version']}, newer than this pet ({FORMAT_VERSION}); upgrade pet"
        )
    return state


def model_from_checkpoint(state: dict[str, Any]):
    """Rebuild the exact model a checkpoint was saved from."""
    spec = TransformerSpec.from_dict(state["spec"])
    model = TransformerModel(spec)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint weights do not match its own spec: {brief(e)}") from e
    return model
