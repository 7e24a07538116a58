"""fairseq-style token-budget batching, deterministic per (seed, epoch).

Why: sentence lengths in IWSLT vary from 2 to 250 tokens; fixed-size batches
either waste most of the padded tensor or run out of memory. As in fairseq:

1. order the pairs by length - source length, then target length (fairseq's
   ``ordered_indices``: a stable argsort by target size followed by one by
   source size), remaining ties broken by a permutation seeded with ``seed``;
2. walk that order and close a batch as soon as adding the next pair would
   make ``batch_size * max(longest source, longest target)`` exceed
   ``max_tokens`` (or the batch exceed ``max_sentences``), so that the padded
   ``(B, S)`` and ``(B, T)`` tensors never hold more than ``max_tokens`` cells;
3. the batches are built once; each epoch only shuffles their order, with a
   generator seeded by ``(seed, epoch)``. Hence the number of batches per epoch
   is constant (schedules can count steps up front) and a job resumed at
   update ``k`` of epoch ``e`` recomputes exactly the same sequence and skips
   ``k`` batches.

A pair longer than ``max_tokens`` on its own cannot fit any batch. By default
that raises a :class:`~pet.errors.DataError` naming the pair and both fixes
(fairseq asserts likewise); ``skip_too_long=True`` drops such pairs with a
warning instead, which is never the right choice for a test set, where every
sentence must be translated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from pet.errors import DataError

log = logging.getLogger(__name__)


def ordered_indices(
    src_sizes: np.ndarray, tgt_sizes: np.ndarray, seed: int | None
) -> np.ndarray:
    """Indices sorted by (source length, target length); ties random from ``seed``, or by index if None."""
    n = len(src_sizes)
    if seed is None:
        indices = np.arange(n, dtype=np.int64)
    else:
        indices = np.random.default_rng([seed, 0x5EED]).permutation(n).astype(np.int64)
    indices = indices[np.argsort(tgt_sizes[indices], kind="mergesort")]
    return indices[np.argsort(src_sizes[indices], kind="mergesort")]


def batch_by_size(
    indices: Sequence[int] | np.ndarray,
    num_tokens: np.ndarray,
    max_tokens: int,
    max_sentences: int | None = None,
    batch_size_multiple: int = 1,
) -> list[list[int]]:
    """Greedy grouping of ``indices`` (in order) under the token and sentence budgets.

    ``num_tokens[i]`` is pair i's padded footprint, ``max(src_len, tgt_len)``.
    Every index must fit alone (checked by the caller). With
    ``batch_size_multiple`` m > 1 a full batch of n pairs is cut to a multiple
    of m (fairseq's ``--required-batch-size-multiple``: max(m*(n//m), n%m)
    pairs) and the rest opens the next batch, which is why fairseq makes a few
    percent more, slightly smaller batches per epoch than plain greedy filling.
    """
    batches: list[list[int]] = []
    batch: list[int] = []
    sizes: list[int] = []
    longest = 0
    limit_sents = max_sentences if max_sentences and max_sentences > 0 else None
    m = max(int(batch_size_multiple), 1)

    def full(n: int, longest_after: int) -> bool:
        return bool(n) and ((n + 1) * longest_after > max_tokens or bool(limit_sents and n >= limit_sents))

    for i in np.asarray(indices).tolist():
        size = int(num_tokens[i])
        if full(len(batch), max(longest, size)):
            keep = len(batch) if m == 1 else max(m * (len(batch) // m), len(batch) % m)
            batches.append(batch[:keep])
            batch, sizes = batch[keep:], sizes[keep:]
            longest = max(sizes, default=0)
            if full(len(batch), max(longest, size)):  # the carried rest and this pair do not fit together
                batches.append(batch)
                batch, sizes, longest = [], [], 0
        batch.append(i)
        sizes.append(size)
        longest = max(longest, size)
    if batch:
        batches.append(batch)
    return batches


class TokenBatchSampler:
    """Fixed length-grouped batches of one split, re-ordered per epoch (see module doc).

    ``shuffle=False`` (evaluation/generation): ties are broken by index and
    :meth:`batches_for_epoch` returns the batches in length order for any epoch.
    """

    def __init__(
        self,
        src_sizes: np.ndarray,
        tgt_sizes: np.ndarray,
        max_tokens: int,
        max_sentences: int | None = None,
        seed: int = 1,
        shuffle: bool = True,
        skip_too_long: bool = False,
        batch_size_multiple: int = 1,
    ) -> None:
        src_sizes = np.asarray(src_sizes, dtype=np.int64)
        tgt_sizes = np.asarray(tgt_sizes, dtype=np.int64)
        if len(src_sizes) != len(tgt_sizes):
            raise ValueError(f"{len(src_sizes)} source sizes but {len(tgt_sizes)} target sizes")
        if max_tokens < 1:
            raise DataError(f"max_tokens={max_tokens}: must be at least 1")
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.seed = seed
        self.shuffle = shuffle
        num_tokens = np.maximum(src_sizes, tgt_sizes)
        too_long = np.flatnonzero(num_tokens > max_tokens)
        if too_long.size and not skip_too_long:
            i = int(too_long[0])
            raise DataError(
                f"sentence pair {i} has {src_sizes[i]} source / {tgt_sizes[i]} target tokens (with </s>), "
                f"more than max_tokens={max_tokens} ({too_long.size} pair(s) in all); raise trainer.max_tokens "
                "(or generation.max_tokens) above the longest pair, or shorten the data (data.max_train_len)"
            )
        self.skipped: list[int] = too_long.tolist()
        if self.skipped:
            log.warning(
                "skipping %d pair(s) longer than max_tokens=%d, e.g. pair %d",
                len(self.skipped), max_tokens, self.skipped[0],
            )
        order = ordered_indices(src_sizes, tgt_sizes, seed if shuffle else None)
        if self.skipped:
            order = order[num_tokens[order] <= max_tokens]
        self.batches: list[list[int]] = batch_by_size(
            order, num_tokens, max_tokens, max_sentences, batch_size_multiple
        )

    def __len__(self) -> int:
        """Number of batches, the same in every epoch."""
        return len(self.batches)

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` in their training order (a fresh list of fresh lists)."""
        if not self.shuffle:
            return [list(b) for b in self.batches]
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.batches))
        return [list(self.batches[j]) for j in perm.tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        """Batches in length order (not shuffled), e.g. for evaluation."""
        return iter([list(b) for b in self.batches])


def eval_batches(
    src_sizes: np.ndarray, tgt_sizes: np.ndarray, max_tokens: int, max_sentences: int | None = None
) -> list[list[int]]:
    """Length-ordered, unshuffled batches for validation and generation."""
    return TokenBatchSampler(src_sizes, tgt_sizes, max_tokens, max_sentences, shuffle=False).batches
