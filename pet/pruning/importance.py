"""Importance of each unit: −∂L/∂c at c = 1, the method's criterion.

−∂L/∂cᵢ is the first-order estimate of how much the loss grows if cᵢ goes
from 1 to 0, so the units with the lowest score are pruned (a negative score
means removing the unit is expected to *lower* the loss).

Choices:

* **Loss: plain NLL** (token-level cross-entropy, no label smoothing), summed
  over the non-pad target tokens of all sampled batches and divided by their
  count. The importance should measure how much a unit contributes to
  predicting the data; label smoothing's uniform term rewards flat output
  distributions, which is a training regulariser, not a property of a unit.
* **Eval mode** (no dropout): the estimate is of the deterministic network.
* **One backward pass per batch**, gradients taken only w.r.t. the
  connectivity buffers (``torch.autograd.grad``), so no parameter gradient is
  accumulated and the model is left exactly as it was.
* ``pruning.importance=random`` is the ablation: seeded uniform scores (it
  never samples batches).

Every criterion is ``criterion(ctx: ImportanceContext) -> {group name: scores}``
and :data:`CRITERIA` maps the ``pruning.importance`` choices to them: a new
criterion is one function and one entry there.
* ``pruning.importance=gradient_magnitude`` scores |∂L/∂cᵢ| instead (the
  Taylor criterion of Molchanov et al., 2017). Measured here
  (``benchmarks/srp_importance.py``): removing a unit is not a small step, so
  the signed estimate is unreliable, and the units it calls harmful
  (∂L/∂c > 0) are often ones the network uses heavily. Pruned one-shot with
  no retraining, a ``transformer_small`` loses less validation NLL with
  |∂L/∂c| than with −∂L/∂c or with random scores. −∂L/∂c stays the default
  because it is the method's criterion.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pet.data.batch import Batch
from pet.models.transformer import TransformerModel
from pet.pruning.gates import GateGroup, gate_buffer


@dataclass(frozen=True)
class ImportanceContext:
    """What a criterion may use. ``sample`` produces the batches and is called
    only when a criterion reads :attr:`batches` (at most once)."""

    model: TransformerModel  # gated, every c = 1
    groups: Sequence[GateGroup]
    sample: Callable[[], Iterable[Batch]] = tuple
    padding_idx: int = 1
    seed: int = 0

    @cached_property
    def batches(self) -> list[Batch]:
        return list(self.sample())


Criterion = Callable[[ImportanceContext], dict[str, Tensor]]


def gradient_importance(ctx: ImportanceContext) -> dict[str, Tensor]:
    """−∂(mean token NLL)/∂c for every group, accumulated over ``ctx.batches``."""
    model, groups, padding_idx = ctx.model, ctx.groups, ctx.padding_idx
    if not model.spec.gated:
        raise ValueError("importance needs a gated model (pet.pruning.gates.to_gated)")
    buffers = [gate_buffer(model, g) for g in groups]
    for c in buffers:
        if not torch.all(c == 1):
            raise ValueError("importance is taken at c = 1; this model has connectivity parameters != 1")
    device = buffers[0].device
    grads = [torch.zeros_like(c, dtype=torch.float64) for c in buffers]
    was_training = model.training
    model.eval()
    ntokens = 0
    try:
        for c in buffers:
            c.requires_grad_(True)
        for batch in ctx.batches:
            batch = batch.to(device)
            logits, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
            lprobs = F.log_softmax(logits.float(), dim=-1)
            nll = F.nll_loss(
                lprobs.view(-1, lprobs.size(-1)), batch.target.reshape(-1), ignore_index=padding_idx, reduction="sum"
            )
            for acc, g in zip(grads, torch.autograd.grad(nll, buffers, allow_unused=True)):
                if g is not None:
                    acc += g.double()
            ntokens += int(batch.target.ne(padding_idx).sum())
    finally:
        for c in buffers:
            c.requires_grad_(False)
            c.grad = None
        model.train(was_training)
    if ntokens == 0:
        raise ValueError("no target tokens in the importance batches")
    return {g.name: (-acc / ntokens).float().cpu() for g, acc in zip(groups, grads)}


def gradient_magnitude_importance(ctx: ImportanceContext) -> dict[str, Tensor]:
    """|∂L/∂c|: a unit matters if the loss is sensitive to it in either direction."""
    return {name: s.abs() for name, s in gradient_importance(ctx).items()}


def random_importance(ctx: ImportanceContext) -> dict[str, Tensor]:
    """Seeded uniform scores: the ablation that shows what importance buys."""
    gen = torch.Generator().manual_seed(ctx.seed)
    return {g.name: torch.rand(g.size, generator=gen) for g in ctx.groups}


# pruning.importance -> criterion
CRITERIA: dict[str, Criterion] = {
    "gradient": gradient_importance,
    "gradient_magnitude": gradient_magnitude_importance,
    "random": random_importance,
}
