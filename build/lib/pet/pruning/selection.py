"""Which units to prune, given importance scores and a :class:`PrunePlan`.

The method's rules: the lowest-importance units go;

* ``c_emb``: the ``counts[g]`` lowest of each stream (encoder and decoder
  separately: their widths are independent);
* ``c_qk`` / ``c_vo``: the same number in every head, the lowest within each
  head, so the pruned model still has equal-sized heads that
  ``scaled_dot_product_attention`` runs as one batched product;
* ``c_fc``: one global threshold over every targeted FFN neuron of both
  stacks, so widths end up uneven where some layers matter more.

Floors (so every pruned model is a valid model): a head keeps at least one
q/k and one v/o dimension (:func:`pet.pruning.rate.plan_for_ratio` caps the
per-head count), a stream keeps at least one dimension, and each FFN keeps
its single most important neuron — it is exempt from the global threshold,
and the pool is capped at "all but one per layer". Ties break by index
(stable sort), so a selection is reproducible.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from pet.pruning.gates import GateGroup
from pet.pruning.rate import PrunePlan

Selection = dict[str, list[int]]  # group name -> sorted indices of pruned units


def _lowest(scores: Tensor, n: int) -> list[int]:
    if n <= 0:
        return []
    order = torch.sort(scores.double(), stable=True).indices
    return sorted(order[:n].tolist())


def select(groups: Sequence[GateGroup], scores: Mapping[str, Tensor], plan: PrunePlan) -> Selection:
    selection: Selection = {}
    for g in groups:
        s = scores[g.name].detach().cpu()
        if s.numel() != g.size:
            raise ValueError(f"{g.name}: {s.numel()} scores for {g.size} units")
        if g.kind == "emb":
            selection[g.name] = _lowest(s, plan.counts.get(g.name, 0))
        elif g.kind in ("qk", "vo"):
            per_head = plan.counts.get(g.name, 0) // g.heads
            picked: list[int] = []
            for h in range(g.heads):
                start = h * g.head_dim
                picked += [start + i for i in _lowest(s[start : start + g.head_dim], per_head)]
            selection[g.name] = sorted(picked)
    fc = [g for g in groups if g.kind == "fc"]
    if fc:
        selection.update(_global_ffn(fc, scores, plan.ffn_pool))
    return selection


def _global_ffn(fc: Sequence[GateGroup], scores: Mapping[str, Tensor], pool: int) -> Selection:
    chunks, owner = [], []
    for i, g in enumerate(fc):
        s = scores[g.name].detach().cpu().double().clone()
        s[int(torch.argmax(s))] = torch.inf  # each FFN keeps its best neuron
        chunks.append(s)
        owner += [(i, j) for j in range(g.size)]
    flat = torch.cat(chunks)
    out: Selection = {g.name: [] for g in fc}
    for k in _lowest(flat, pool):
        i, j = owner[k]
        out[fc[i].name].append(j)
    return {name: sorted(idx) for name, idx in out.items()}


def selection_summary(groups: Sequence[GateGroup], selection: Selection) -> dict[str, str]:
    """``group -> "kept/size"`` for logs and reports."""
    return {g.name: f"{g.size - len(selection.get(g.name, []))}/{g.size}" for g in groups}
