"""Sentence pairs as id tensors, and their collation into a :class:`Batch`.

Conventions (fairseq's, see :mod:`pet.data.batch`): every source and target
sequence ends with ``</s>``; batches are right-padded with ``<pad>``; the
decoder input ``prev_output_tokens`` is ``[</s>] + target[:-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pet.data.batch import Batch
from pet.data.binarize import TokenArray
from pet.data.dictionary import Dictionary
from pet.errors import DataError


class LanguagePairDataset:
    """Aligned source/target :class:`TokenArray` s with their dictionaries."""

    def __init__(
        self,
        src: TokenArray,
        tgt: TokenArray,
        src_dict: Dictionary,
        tgt_dict: Dictionary,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
    ) -> None:
        if len(src) != len(tgt):
            raise DataError(
                f"source has {len(src)} sentences but target has {len(tgt)}; "
                "the prepared folder is inconsistent - delete it and prepare again"
            )
        self.src = src
        self.tgt = tgt
        self.src_dict = src_dict
        self.tgt_dict = tgt_dict
        # language codes, e.g. for the Moses detokenizer when scoring sacreBLEU
        self.src_lang = src_lang
        self.tgt_lang = tgt_lang
        self.src_sizes: np.ndarray = src.sizes
        self.tgt_sizes: np.ndarray = tgt.sizes

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.src[i], self.tgt[i]

    def num_tokens(self, i: int) -> int:
        """Padded footprint of pair ``i`` in a batch: the longer of its two sides."""
        return int(max(self.src_sizes[i], self.tgt_sizes[i]))

    def collate(self, indices: Sequence[int]) -> Batch:
        """Pad the pairs ``indices`` (in the given order) into one :class:`Batch`."""
        if len(indices) == 0:
            raise ValueError("collate: empty list of indices")
        pad, eos = self.src_dict.pad, self.tgt_dict.eos
        idx = np.asarray(indices, dtype=np.int64)
        src_len = self.src_sizes[idx]
        tgt_len = self.tgt_sizes[idx]
        bsz = len(idx)
        src_tokens = torch.full((bsz, int(src_len.max())), pad, dtype=torch.long)
        target = torch.full((bsz, int(tgt_len.max())), self.tgt_dict.pad, dtype=torch.long)
        prev = torch.full_like(target, self.tgt_dict.pad)
        for row, i in enumerate(idx.tolist()):
            s, t = self.src[i], self.tgt[i]
            src_tokens[row, : s.numel()] = s
            target[row, : t.numel()] = t
            prev[row, 0] = eos
            prev[row, 1 : t.numel()] = t[:-1]
        return Batch(
            ids=torch.from_numpy(idx.copy()),
            src_tokens=src_tokens,
            src_lengths=torch.from_numpy(src_len.astype(np.int64)),
            prev_output_tokens=prev,
            target=target,
            ntokens=int(tgt_len.sum()),
        )
