"""A vocabulary that is index-for-index compatible with fairseq's ``Dictionary``.

Why compatible: the published parameter counts (8,848 German / 6,632 English
types) and any fairseq ``dict.txt`` only mean the same thing here if symbols get
the same indices. fairseq's rules, reproduced exactly:

* four specials first: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3;
* :meth:`Dictionary.finalize` orders the other symbols by count, descending,
  ties alphabetically (fairseq sorts ``(symbol, count)`` pairs, then takes
  ``Counter.most_common``, a stable sort), drops symbols below ``threshold``,
  then pads the size to a multiple of ``padding_factor`` with ``madeupword0000``,
  ``madeupword0001``, ... (count 0) so embedding matrices align on GPUs;
* ``dict.txt`` holds ``symbol count`` lines without the specials.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from pet.data.fileio import atomic_write_lines
from pet.errors import DataError

_SPACE = re.compile(r"\s+")


def tokenize_line(line: str) -> list[str]:
    """Split on any run of whitespace (fairseq's ``tokenize_line``)."""
    return _SPACE.sub(" ", line).strip().split()


def remove_bpe(line: str, bpe_symbol: str = "@@ ") -> str:
    """Undo subword-nmt segmentation exactly as fairseq's ``--remove-bpe`` does."""
    return (line + " ").replace(bpe_symbol, "").rstrip()


class Dictionary:
    """Maps symbols to contiguous integer ids, fairseq-style (see module doc)."""

    BOS = "<s>"
    PAD = "<pad>"
    EOS = "</s>"
    UNK = "<unk>"
    SPECIALS = (BOS, PAD, EOS, UNK)

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.count: list[int] = []
        self.indices: dict[str, int] = {}
        for sym in self.SPECIALS:
            self.add_symbol(sym, n=0)
        self.nspecial = len(self.symbols)

    # ------------------------------------------------------------------ basics
    @property
    def bos(self) -> int:
        return 0

    @property
    def pad(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def unk(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, idx: int) -> str:
        if 0 <= idx < len(self.symbols):
            return self.symbols[idx]
        return self.UNK

    def __contains__(self, sym: str) -> bool:
        return sym in self.indices

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} symbols)"

    def index(self, sym: str) -> int:
        """Id of ``sym``; unknown symbols map to ``<unk>``."""
        return self.indices.get(sym, self.unk)

    def add_symbol(self, sym: str, n: int = 1) -> int:
        """Add ``sym`` (or bump its count by ``n``) and return its id."""
        idx = self.indices.get(sym)
        if idx is not None:
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[sym] = idx
        self.symbols.append(sym)
        self.count.append(n)
        return idx

    def checksum(self) -> str:
        """Short hash of the symbol list: binarized ids are only valid for it."""
        return hashlib.sha256("\n".join(self.symbols).encode("utf-8")).hexdigest()[:16]

    # -------------------------------------------------------------- ordering
    def finalize(self, threshold: int = 0, padding_factor: int = 8) -> None:
        """Reorder non-special symbols as fairseq does, drop rare ones, pad the size."""
        pairs = sorted(zip(self.symbols[self.nspecial :], self.count[self.nspecial :]))
        # sorted() is stable: equal counts keep the alphabetical order above,
        # exactly like collections.Counter.most_common.
        pairs.sort(key=lambda p: p[1], reverse=True)
        symbols = list(self.symbols[: self.nspecial])
        counts = list(self.count[: self.nspecial])
        for sym, cnt in pairs:
            if cnt < threshold:
                break
            symbols.append(sym)
            counts.append(cnt)
        self.symbols, self.count = symbols, counts
        self.indices = {s: i for i, s in enumerate(symbols)}
        self.pad_to_multiple(padding_factor)

    def pad_to_multiple(self, padding_factor: int) -> None:
        """Append ``madeupwordNNNN`` symbols until ``len(self) % padding_factor == 0``."""
        if padding_factor <= 1:
            return
        i = 0
        while len(self) % padding_factor:
            self.add_symbol(f"madeupword{i:04d}", n=0)
            i += 1

    # -------------------------------------------------------------- encoding
    def encode_line(self, line: str, append_eos: bool = True) -> torch.Tensor:
        """Whitespace-split ``line`` into ids (unknown -> ``<unk>``), plus ``</s>``."""
        ids = [self.indices.get(w, 3) for w in tokenize_line(line)]
        if append_eos:
            ids.append(self.eos)
        return torch.tensor(ids, dtype=torch.long)

    def string(
        self, ids: torch.Tensor | Sequence[int], bpe_symbol: str | None = None, escape_unk: bool = False
    ) -> str:
        """Ids back to text, dropping ``<s>``/``<pad>``/``</s>``; optionally undo BPE.

        ``escape_unk`` renders ``<unk>`` as ``<<unk>>`` (fairseq does so for
        references, so that an ``<unk>`` in a hypothesis never matches one there).
        """
        if torch.is_tensor(ids):
            ids = ids.tolist()
        skip = {self.bos, self.pad, self.eos}
        unk = f"<{self.UNK}>" if escape_unk else self.UNK
        text = " ".join(unk if i == self.unk else self[i] for i in ids if i not in skip)
        return remove_bpe(text, bpe_symbol) if bpe_symbol else text

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write fairseq's ``dict.txt`` (``symbol count``, specials omitted), atomically."""
        atomic_write_lines(
            path, (f"{s} {c}" for s, c in zip(self.symbols[self.nspecial :], self.count[self.nspecial :]))
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Dictionary":
        """Read a fairseq ``dict.txt``; a malformed line names the file, line and fix."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"dictionary {path} does not exist; run `pet stage=prepare` to build it")
        d = cls()
        with open(path, encoding="utf-8", newline="\n") as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip()
                if not line:
                    continue
                sym, _, field = line.rpartition(" ")
                if field == "#fairseq:overwrite":
                    sym, _, field = sym.rpartition(" ")
                if not sym or not field.lstrip("-").isdigit():
                    raise DataError(
                        f"{path}:{lineno}: expected 'symbol count', got {line!r}; "
                        "fix the line or rebuild the dictionary"
                    )
                if sym in d.indices and sym not in cls.SPECIALS:
                    raise DataError(
                        f"{path}:{lineno}: duplicate symbol {sym!r}; remove the repeated line"
                    )
                d.add_symbol(sym, n=int(field))
        return d

    def to_list(self) -> list[str]:
        """All symbols in id order (specials included), e.g. to embed in a checkpoint."""
        return list(self.symbols)

    @classmethod
    def from_list(cls, symbols: Sequence[str], counts: Sequence[int] | None = None) -> "Dictionary":
        """Inverse of :meth:`to_list`; the first four symbols must be the specials."""
        if tuple(symbols[:4]) != cls.SPECIALS:
            raise DataError(
                f"vocabulary list must start with {list(cls.SPECIALS)}, got {list(symbols[:4])}; "
                "it was not written by Dictionary.to_list"
            )
        if len(set(symbols)) != len(symbols):
            raise DataError("vocabulary list contains duplicate symbols; it is corrupt")
        d = cls()
        for i, sym in enumerate(symbols[4:], start=4):
            d.add_symbol(sym, n=int(counts[i]) if counts is not None else 0)
        return d

    # ---------------------------------------------------------------- building
    def add_lines(self, lines: Iterable[str]) -> None:
        """Count the tokens of ``lines`` plus one ``</s>`` per line (fairseq-preprocess)."""
        nlines = 0

        def words() -> Iterator[str]:
            nonlocal nlines
            for line in lines:
                nlines += 1
                yield from line.split()  # same split as tokenize_line, without the regex

        counts = Counter(words())
        for w, c in counts.items():
            self.add_symbol(w, n=c)
        self.count[self.eos] += nlines

    @classmethod
    def build(
        cls,
        paths: Iterable[str | os.PathLike[str]],
        threshold: int = 0,
        padding_factor: int = 8,
    ) -> "Dictionary":
        """Dictionary of the whitespace tokens in ``paths``, finalized (fairseq-preprocess)."""
        d = cls()
        for p in paths:
            with open(p, encoding="utf-8", newline="\n") as f:
                d.add_lines(f)
        d.finalize(threshold=threshold, padding_factor=padding_factor)
        return d
