"""Helpers shared by the tests/test_pruning_*.py files (not a test module)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from pet.models.transformer import TransformerModel
from pet.pruning.gates import dim_ownership, groups_for, set_gates, to_gated
from pet.pruning.selection import Selection, select_for_rate
from tests.conftest import small_model

# Uneven on purpose: encoder and decoder widths differ, FFNs differ per side.
UNEVEN = dict(encoder_embed_dim=32, decoder_embed_dim=48, encoder_ffn_dim=48, decoder_ffn_dim=80, encoder_heads=4, decoder_heads=4)


def random_selection(model: TransformerModel, targets: str = "all", keep: float = 0.5, seed: int = 0) -> Selection:
    """A valid selection (equal per head, global FFN pool) from random scores."""
    groups = groups_for(model, targets)
    g = torch.Generator().manual_seed(seed)
    scores = {gr.name: torch.rand(gr.size, generator=g) for gr in groups}
    return select_for_rate(dim_ownership(model), groups, scores, rate=keep).selection


def zero_selected(model: TransformerModel, selection: Selection) -> None:
    set_gates(model, selection, 0.0)


def gated_small(layernorm: str = "weighted", seed: int = 0, **overrides) -> tuple[TransformerModel, TransformerModel]:
    plain = small_model(seed=seed, **{**UNEVEN, **overrides}).eval()
    return plain, to_gated(plain, layernorm).eval()


class FakeTrainer:
    """The parts of pet.training.trainer.Trainer a TrainHook touches."""

    def __init__(self, model, batches_per_epoch: int = 5, update_freq: int = 1, weight_decay: float = 0.1, lr: float = 1e-2):
        self.model = model
        self.optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=lr, weight_decay=weight_decay)
        self.tcfg = SimpleNamespace(update_freq=update_freq)
        self.train_sampler = SimpleNamespace(batches_for_epoch=lambda epoch: [[i] for i in range(batches_per_epoch)])
        self.world_size, self.rank = 1, 0
