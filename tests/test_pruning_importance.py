"""Importance scores are what they claim: −∂L/∂c at c = 1, or its magnitude."""

import pytest
import torch
import torch.nn.functional as F

from pet.pruning.gates import gate_buffer, groups_for
from pet.pruning.importance import (
    CRITERIA,
    ImportanceContext,
    gradient_importance,
    gradient_magnitude_importance,
    random_importance,
)
from tests.conftest import random_batch
from tests.pruning_helpers import gated_small

BATCHES = [random_batch(seed=0), random_batch(bsz=3, src_len=12, tgt_len=10, seed=1)]


def _mean_nll(model) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in BATCHES:
            lprobs = F.log_softmax(model(b.src_tokens, b.prev_output_tokens)[0].double(), dim=-1)
            total += F.nll_loss(lprobs.view(-1, lprobs.size(-1)), b.target.reshape(-1), ignore_index=1, reduction="sum").item()
            tokens += int(b.target.ne(1).sum())
    return total / tokens


def test_gradient_importance_is_minus_the_derivative_of_the_mean_nll():
    _, gated = gated_small(seed=2)
    gated = gated.double()
    groups = groups_for(gated, "all")
    scores = gradient_importance(ImportanceContext(gated, groups, lambda: BATCHES))
    eps = 1e-6
    for group in (groups[0], groups[2], groups[-1]):  # an embedding stream, an attention module, an FFN
        c = gate_buffer(gated, group.name)
        for unit in (0, group.size - 1):
            with torch.no_grad():
                c[unit] = 1 + eps
                up = _mean_nll(gated)
                c[unit] = 1 - eps
                down = _mean_nll(gated)
                c[unit] = 1.0
            assert scores[group.name][unit].item() == pytest.approx(-(up - down) / (2 * eps), rel=1e-3, abs=1e-6)


def test_gradient_importance_leaves_the_model_untouched():
    _, gated = gated_small(seed=4)
    gated.train()
    before = {k: v.clone() for k, v in gated.state_dict().items()}
    gradient_importance(ImportanceContext(gated, groups_for(gated, "all"), lambda: BATCHES))
    assert gated.training
    assert all(p.grad is None for p in gated.parameters())
    assert all(not b.requires_grad for b in gated.buffers())
    assert all(torch.equal(before[k], v) for k, v in gated.state_dict().items())


def test_magnitude_is_the_absolute_gradient_and_ranks_differently():
    _, gated = gated_small(seed=5)
    groups = groups_for(gated, "all")
    signed = gradient_importance(ImportanceContext(gated, groups, lambda: BATCHES))
    magnitude = gradient_magnitude_importance(ImportanceContext(gated, groups, lambda: BATCHES))
    assert set(magnitude) == set(signed)
    for name in signed:
        assert torch.allclose(magnitude[name], signed[name].abs())
    # Both signs occur, so the two criteria really pick different units.
    flat = torch.cat(list(signed.values()))
    assert (flat > 0).any() and (flat < 0).any()


def test_random_importance_is_seeded():
    _, gated = gated_small(seed=0)
    groups = groups_for(gated, "all")
    a, b, c = (random_importance(ImportanceContext(gated, groups, seed=s)) for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_importance_refuses_a_model_already_being_pruned():
    _, gated = gated_small(seed=0)
    groups = groups_for(gated, "all")
    with torch.no_grad():
        gate_buffer(gated, groups[0].name)[0] = 0.5
    with pytest.raises(ValueError, match="c = 1"):
        gradient_importance(ImportanceContext(gated, groups, lambda: BATCHES))


def test_every_criterion_takes_the_context_and_only_gradients_sample_batches():
    _, gated = gated_small(seed=0)
    groups = groups_for(gated, "all")
    for name, criterion in CRITERIA.items():
        sampled = []
        ctx = ImportanceContext(gated, groups, lambda log=sampled: log.append(1) or BATCHES, seed=3)
        scores = criterion(ctx)
        assert {g.name: g.size for g in groups} == {k: v.numel() for k, v in scores.items()}
        assert len(sampled) == (0 if name == "random" else 1), name
