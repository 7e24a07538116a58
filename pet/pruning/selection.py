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

:func:`select_for_rate` is the whole one-shot step: gate groups and their
scores in, the rate solver's plan, the selection and the exact parameter
count it leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from pet.pruning.gates import DimOwnership, GateGroup
from pet.pruning.rate import PrunePlan, parameter_count, plan

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


@dataclass(frozen=True)
class RateSelection:
    plan: PrunePlan
    selection: Selection
    kept: dict[str, int]  # group name -> units it keeps
    predicted_parameters: float  # exact parameter count once the selection is removed


def select_for_rate(
    own: DimOwnership,
    groups: Sequence[GateGroup],
    scores: Mapping[str, Tensor],
    *,
    rate: Optional[float] = None,
    target_parameters: Optional[float] = None,
) -> RateSelection:
    """Prune ``groups`` of the model ``own`` describes down to ``target_parameters``
    (or to ``rate`` times its current count), lowest ``scores`` first."""
    if (rate is None) == (target_parameters is None):
        raise ValueError("select_for_rate takes one of rate and target_parameters")
    if target_parameters is None:
        target_parameters = rate * parameter_count(own, {})
    prune_plan = plan(own, groups, target_parameters)
    selection = select(groups, scores, prune_plan)
    kept = {g.name: g.size - len(selection.get(g.name, [])) for g in groups}
    return RateSelection(prune_plan, selection, kept, parameter_count(own, kept))
