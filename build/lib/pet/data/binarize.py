"""Token ids computed once and cached next to the text they come from.

Why: looking up 1-2 million tokens in a dictionary takes a second or two;
doing it at the start of every training, evaluation and pruning job (and
every sweep member) wastes that time and keeps the text in Python strings.
A split/language is stored as one flat ``int32`` tensor of ids (each sentence
followed by ``</s>``) plus ``int64`` offsets: sentence ``i`` is
``tokens[offsets[i]:offsets[i+1]]``. One ``torch.save`` file per
split/language (``{split}.{lang}.ids.pt``) carries the checksum of the
dictionary it was encoded with, so ids never silently meet another vocabulary.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pet.data.dictionary import Dictionary
from pet.data.fileio import atomic_open
from pet.errors import DataError, brief

FORMAT = "pet-ids-v1"


def binarized_path(folder: str | os.PathLike[str], split: str, lang: str) -> Path:
    return Path(folder) / f"{split}.{lang}.ids.pt"


@dataclass
class TokenArray:
    """Variable-length id sequences in one flat tensor (see module doc)."""

    tokens: torch.Tensor  # (N,) int32
    offsets: torch.Tensor  # (n + 1,) int64
    dict_checksum: str = ""
    num_unk: int = 0

    def __post_init__(self) -> None:
        self._offsets_np = self.offsets.numpy()

    def __len__(self) -> int:
        return int(self.offsets.numel()) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        start, end = int(self._offsets_np[i]), int(self._offsets_np[i + 1])
        return self.tokens[start:end]

    @property
    def sizes(self) -> np.ndarray:
        """Length of every sequence, ``</s>`` included (int64 numpy array)."""
        return np.diff(self._offsets_np)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())


def binarize_lines(lines: Iterable[str], dictionary: Dictionary, append_eos: bool = True) -> TokenArray:
    """Encode whitespace-tokenized lines; unknown symbols become ``<unk>`` and are counted."""
    get = dictionary.indices.get
    unk, eos = dictionary.unk, dictionary.eos
    flat = array("i")
    offsets = array("q", [0])
    num_unk = 0
    for line in lines:
        ids = [get(w, unk) for w in line.split()]
        num_unk += ids.count(unk)
        if append_eos:
            ids.append(eos)
        flat.extend(ids)
        offsets.append(len(flat))
    tokens = torch.frombuffer(flat, dtype=torch.int32).clone() if flat else torch.zeros(0, dtype=torch.int32)
    return TokenArray(
        tokens=tokens,
        offsets=torch.frombuffer(offsets, dtype=torch.int64).clone(),
        dict_checksum=dictionary.checksum(),
        num_unk=num_unk,
    )


def save_binarized(array_: TokenArray, path: str | os.PathLike[str]) -> None:
    """Atomically write ``array_`` (one small ``torch.save`` dict)."""
    payload = {
        "format": FORMAT,
        "tokens": array_.tokens,
        "offsets": array_.offsets,
        "dict_checksum": array_.dict_checksum,
        "num_unk": array_.num_unk,
    }
    with atomic_open(path, binary=True) as f:
        torch.save(payload, f)


def load_binarized(path: str | os.PathLike[str], dictionary: Dictionary | None = None) -> TokenArray:
    """Read ids written by :func:`save_binarized`; check they match ``dictionary``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run `pet stage=prepare data=...` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file: one readable line
        raise DataError(f"{path}: unreadable ids file ({brief(err)}); delete the data folder and prepare again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a pet ids file ({FORMAT}); delete the data folder and prepare again")
    arr = TokenArray(
        tokens=payload["tokens"],
        offsets=payload["offsets"],
        dict_checksum=payload["dict_checksum"],
        num_unk=int(payload["num_unk"]),
    )
    if dictionary is not None and arr.dict_checksum != dictionary.checksum():
        raise DataError(
            f"{path} was encoded with another dictionary than the one beside it; "
            "delete the data folder and run `pet stage=prepare` again"
        )
    return arr
