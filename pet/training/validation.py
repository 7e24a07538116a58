"""Validation during training: the label-smoothed loss (in bits per target
token, as fairseq reports it) and beam-search BLEU on the validation split."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from pet.generation.translate import translate_dataset
from pet.training.criterion import LN2, LabelSmoothedCrossEntropy
from pet.training.state import TrainState

log = logging.getLogger(__name__)


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    criterion: LabelSmoothedCrossEntropy,
    dataset: Any,
    sampler: Any,
    device: torch.device,
    autocast: Callable[[], Any],
) -> dict[str, float]:
    """valid_loss, valid_nll_loss (base 2, per target token) and valid_ppl of
    ``model`` over every batch of ``sampler``; leaves the model in eval mode."""
    model.eval()
    sums: dict[str, float] = {}
    ntokens = 0
    for indices in sampler.batches_for_epoch(0):
        batch = dataset.collate(indices).to(device)
        with autocast():
            _, logs = criterion(model, batch)
        ntokens += batch.ntokens
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
    metrics = {f"valid_{k}": v / max(ntokens, 1) / LN2 for k, v in sums.items()}
    metrics["valid_ppl"] = 2 ** metrics["valid_nll_loss"]
    return metrics


def validation_bleu(model: nn.Module, dataset: Any, src_dict: Any, tgt_dict: Any, gen: Any,
                    device: torch.device) -> float:
    """Beam-search BLEU of ``model`` on ``dataset`` with generation config
    ``gen`` (``gen.max_examples`` caps the sentences, since decoding costs far
    more than the loss); leaves the model in training mode."""
    result = translate_dataset(model, dataset, src_dict, tgt_dict, gen, device, tgt_lang=None)
    model.train()
    return result.bleu


def log_validation(state: TrainState, metrics: dict[str, float], complete: bool) -> None:
    """One line for a validation at the end of (or, for a stop, within) ``state.epoch``."""
    log.info(
        "%s epoch %d (update %d): valid loss %.4f, nll %.4f, ppl %.2f, best %.4f%s",
        "end of" if complete else "stopped within",
        state.epoch,
        state.num_updates,
        metrics["valid_loss"],
        metrics["valid_nll_loss"],
        metrics["valid_ppl"],
        state.best_valid_loss,
        f", BLEU {metrics['valid_bleu']:.2f} (best {state.best_valid_bleu:.2f})" if "valid_bleu" in metrics else "",
    )
