"""Binarized ids and collation conventions (Batch: right padding, </s> placement)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pet.data.binarize import binarize_lines, load_binarized, save_binarized
from pet.data.dataset import LanguagePairDataset
from pet.data.dictionary import Dictionary
from pet.errors import DataError

SRC = ["ich habe drei katzen .", "hallo", "das ist ein test mit unbekannt"]
TGT = ["i have three cats .", "hello there", "this is a test"]


def _dict(lines: list[str]) -> Dictionary:
    d = Dictionary()
    d.add_lines(lines)
    d.finalize()
    return d


@pytest.fixture()
def dataset() -> LanguagePairDataset:
    sd, td = _dict(SRC[:2]), _dict(TGT)
    return LanguagePairDataset(binarize_lines(SRC, sd), binarize_lines(TGT, td), sd, td)


def test_binarize_round_trip(tmp_path: Path) -> None:
    d = _dict(SRC[:2])
    arr = binarize_lines(SRC, d)
    assert arr.tokens.dtype == torch.int32 and len(arr) == 3
    assert arr.sizes.tolist() == [6, 2, 7] and arr.num_unk == 6
    assert d.string(arr[0]) == SRC[0]
    path = tmp_path / "train.de.ids.pt"
    save_binarized(arr, path)
    again = load_binarized(path, d)
    assert torch.equal(again.tokens, arr.tokens) and torch.equal(again.offsets, arr.offsets)
    with pytest.raises(DataError, match="another dictionary"):
        load_binarized(path, _dict(TGT))
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="unreadable ids file"):
        load_binarized(path)


def test_collate_conventions(dataset: LanguagePairDataset) -> None:
    td = dataset.tgt_dict
    batch = dataset.collate([2, 0, 1])
    assert batch.ids.tolist() == [2, 0, 1]
    assert batch.src_tokens.shape == (3, 7) and batch.src_tokens.dtype == torch.long
    assert batch.src_lengths.tolist() == [7, 6, 2]
    assert batch.target.shape == (3, 6) and batch.prev_output_tokens.shape == (3, 6)
    assert batch.ntokens == 5 + 6 + 3
    for row, i in enumerate([2, 0, 1]):
        s, t = dataset[i]
        n, m = s.numel(), t.numel()
        assert batch.src_tokens[row, n - 1] == dataset.src_dict.eos  # source ends with </s>
        assert (batch.src_tokens[row, n:] == dataset.src_dict.pad).all()  # right padding
        assert batch.target[row, :m].tolist() == t.tolist() and batch.target[row, m - 1] == td.eos
        assert (batch.target[row, m:] == td.pad).all()
        assert batch.prev_output_tokens[row, :m].tolist() == [td.eos] + t[:-1].tolist()
        assert (batch.prev_output_tokens[row, m:] == td.pad).all()
    assert batch.size == 3 and batch.to("cpu").ntokens == batch.ntokens


def test_sizes_and_mismatch(dataset: LanguagePairDataset) -> None:
    assert dataset.src_sizes.tolist() == [6, 2, 7] and dataset.tgt_sizes.tolist() == [6, 3, 5]
    assert dataset.num_tokens(1) == 3
    with pytest.raises(DataError, match="source has 3 sentences but target has 2"):
        LanguagePairDataset(dataset.src, binarize_lines(TGT[:2], dataset.tgt_dict), dataset.src_dict, dataset.tgt_dict)
