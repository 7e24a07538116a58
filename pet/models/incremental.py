"""The incremental-decoding cache of :class:`pet.models.transformer.TransformerModel`:
its layout, appending a step, and moving rows when beam search reorders or
drops hypotheses."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

# cache[f"{depth}.self"] = {"k": (B, H, T, dk), "v": (B, H, T, dv)}  one row per hypothesis
# cache[f"{depth}.cross"] = {"k": (S, H, Ts, dk), "v": ...}  one row per *sentence*, computed
#   once; the B = S * r decoder rows are sentence-major groups of r hypotheses (a beam)
#   after a beam reorder a self entry also holds "k+"/"v+": (B, H, T+1, d) buffers whose
#   first T steps are "k"/"v", so the next step's append writes one slot (append_step)
IncrementalCache = dict[str, dict[str, Tensor]]


def append_step(cache: dict[str, Tensor], key: str, new: Tensor) -> Tensor:
    """``cache[key]`` (B, H, T, d) with ``new`` (B, H, 1, d) appended along time.

    Beam search reorders the history at every step and then appends one step:
    two copies of the whole history if done separately. :func:`reorder_cache`
    therefore gathers the history straight into a buffer one step longer
    (``cache[key + "+"]``), and the append only fills its last slot.
    """
    old, spare = cache[key], cache.pop(key + "+", None)
    t = old.size(2)
    if spare is not None and spare.size(2) == t + new.size(2) and spare.size(0) == new.size(0):
        spare[:, :, t:] = new
        return spare
    return torch.cat([old, new], dim=2)


def reorder_cache(cache: IncrementalCache, order: Tensor, sentences: Optional[Tensor] = None) -> None:
    """Move cached keys/values along the batch dimension, in place.

    ``order[i]`` is the hypothesis row that new row ``i`` extends (beam
    reordering; it may also expand one row per sentence into a beam).
    Cross-attention entries hold one row per sentence and ignore beam
    moves; ``sentences`` (indices into the current sentences) selects the
    ones that stay when finished sentences leave the batch.
    """
    for name, entry in cache.items():
        if not name.endswith(".self"):
            if sentences is not None:
                for key in entry:
                    entry[key] = entry[key].index_select(0, sentences)
            continue
        for key in ("k", "v"):
            old = entry[key]
            if old.requires_grad:  # out= takes no autograd inputs; decoding never has any
                entry[key] = old.index_select(0, order)
                continue
            b, h, t, d = old.shape
            spare = old.new_empty(order.numel(), h, t + 1, d)
            entry[key] = torch.index_select(old, 0, order, out=spare[:, :, :t])
            entry[key + "+"] = spare  # append_step fills its last slot
