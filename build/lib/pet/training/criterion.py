"""fairseq's label-smoothed cross-entropy, summed over non-pad tokens.

Losses are returned as sums; the trainer divides gradients by the number of
target tokens in the whole (accumulated) update, as fairseq does, so the
result does not depend on how a batch is split.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from pet.data.batch import Batch

LN2 = math.log(2)


def label_smoothed_nll_loss(lprobs: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """lprobs (N, V), target (N,) -> (smoothed loss sum, nll sum)."""
    target = target.unsqueeze(-1)
    nll = -lprobs.gather(dim=-1, index=target)
    smooth = -lprobs.sum(dim=-1, keepdim=True)
    pad = target.eq(ignore_index)
    nll = nll.masked_fill(pad, 0.0).sum()
    smooth = smooth.masked_fill(pad, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss, nll


class LossFn(Protocol):
    """(model, batch) -> (loss sum to backpropagate, logging sums)."""

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]: ...


class LabelSmoothedCrossEntropy:
    def __init__(self, label_smoothing: float, padding_idx: int):
        self.eps = label_smoothing
        self.padding_idx = padding_idx

    def from_logits(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        lprobs = F.log_softmax(logits.float(), dim=-1)
        return label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps, self.padding_idx)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        logits, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        loss, nll = self.from_logits(logits, batch.target)
        return loss, {"loss": loss.item(), "nll_loss": nll.item()}
