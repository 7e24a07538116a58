"""Token-budget batching: budget, coverage, determinism per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from pet.data.batching import TokenBatchSampler, eval_batches, ordered_indices
from pet.errors import DataError


def _sizes(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(2, 120, size=n)
    tgt = np.clip(src + rng.integers(-10, 11, size=n), 2, None)
    return src, tgt


@pytest.mark.parametrize(
    "max_tokens,max_sentences,multiple", [(1024, None, 1), (4096, None, 1), (4096, 16, 1), (4096, None, 8), (300, 12, 8)]
)
def test_budget_and_coverage(max_tokens: int, max_sentences: int | None, multiple: int) -> None:
    src, tgt = _sizes()
    sampler = TokenBatchSampler(src, tgt, max_tokens, max_sentences, seed=7, batch_size_multiple=multiple)
    for epoch in (1, 2):
        batches = sampler.batches_for_epoch(epoch)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(src))), "every index exactly once per epoch"
        for b in batches:
            longest = max(max(src[b]), max(tgt[b]))
            assert len(b) * longest <= max_tokens
            if max_sentences:
                assert len(b) <= max_sentences


def test_batch_size_multiple_cuts_full_batches_like_fairseq() -> None:
    """fairseq's --required-batch-size-multiple: n pairs that fill the budget
    become max(m*(n//m), n%m) and the rest carries into the next batch."""
    # 10 pairs of 100 tokens under 1000 tokens: greedy filling takes 10, m=8 takes 8.
    src = tgt = np.full(20, 100)
    assert [len(b) for b in TokenBatchSampler(src, tgt, 1000, shuffle=False).batches] == [10, 10]
    cut = TokenBatchSampler(src, tgt, 1000, shuffle=False, batch_size_multiple=8).batches
    assert [len(b) for b in cut] == [8, 8, 4]
    assert [i for b in cut for i in b] == list(range(20))
    # a budget below m pairs keeps n % m of them
    assert [len(b) for b in TokenBatchSampler(src, tgt, 500, shuffle=False, batch_size_multiple=8).batches] == [5] * 4
    # on realistic sizes: every batch but the last holds a multiple of 8 pairs or fewer than 8
    a, b = _sizes()
    batches = TokenBatchSampler(a, b, 4096, shuffle=False, batch_size_multiple=8).batches
    assert all(len(x) % 8 == 0 or len(x) < 8 for x in batches[:-1])
    assert len(batches) > len(TokenBatchSampler(a, b, 4096, shuffle=False).batches)


def test_deterministic_per_seed_and_epoch_and_different_across_epochs() -> None:
    src, tgt = _sizes()
    a = TokenBatchSampler(src, tgt, 2048, seed=3)
    b = TokenBatchSampler(src, tgt, 2048, seed=3)
    assert a.batches_for_epoch(5) == b.batches_for_epoch(5)
    assert a.batches_for_epoch(5) != a.batches_for_epoch(6)
    assert TokenBatchSampler(src, tgt, 2048, seed=4).batches_for_epoch(5) != a.batches_for_epoch(5)
    # a resumed job recomputes epoch e and skips the first k batches
    k = 10
    assert b.batches_for_epoch(5)[k:] == a.batches_for_epoch(5)[k:]


def test_order_is_by_length_with_random_ties() -> None:
    src = np.array([5, 3, 5, 3, 5, 3])
    tgt = np.array([1, 2, 1, 2, 0, 2])
    order = ordered_indices(src, tgt, seed=None)
    assert order.tolist() == [1, 3, 5, 4, 0, 2]  # source length, then target length, then index
    seeded = {tuple(ordered_indices(src, tgt, seed=s).tolist()) for s in range(20)}
    assert len(seeded) > 1 and all(t[3] == 4 for t in seeded)


def test_batches_are_length_homogeneous_and_eval_is_unshuffled() -> None:
    src, tgt = _sizes()
    batches = eval_batches(src, tgt, 4096)
    sampler = TokenBatchSampler(src, tgt, 4096, shuffle=False)
    assert batches == sampler.batches_for_epoch(1) == sampler.batches_for_epoch(2) == list(sampler)
    firsts = [src[b[0]] for b in batches]
    assert firsts == sorted(firsts)


def test_too_long_sentence_raises_or_is_skipped() -> None:
    src = np.array([10, 300, 12])
    tgt = np.array([10, 20, 400])
    with pytest.raises(DataError, match=r"pair 1 has 300 source / 20 target tokens.*trainer\.max_tokens"):
        TokenBatchSampler(src, tgt, 256)
    sampler = TokenBatchSampler(src, tgt, 256, skip_too_long=True)
    assert sampler.skipped == [1, 2]
    assert [i for b in sampler.batches_for_epoch(1) for i in b] == [0]
