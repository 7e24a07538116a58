"""A prepared data folder (made by :func:`pet.data.prepare.prepare_data`), as
later stages read it: ``meta.json``, the dictionaries, the datasets of each
split (loaded from their ids files on first use) and the paths of its text."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pet.data.binarize import binarized_path, load_binarized
from pet.data.dataset import LanguagePairDataset
from pet.data.dictionary import Dictionary
from pet.data.fileio import read_lines
from pet.errors import DataError, brief

SPLITS = ("train", "valid", "test")
META_FORMAT = "pet-prepared-v1"


def read_meta(out_dir: Path) -> dict[str, Any] | None:
    """``out_dir``'s meta.json, None if it has none (not prepared, or not yet
    finished); DataError if it is unreadable or of another format."""
    path = out_dir / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is unreadable ({brief(err)}); delete {out_dir} and prepare again") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DataError(f"{path} was not written by this version of pet; delete {out_dir} and prepare again")
    return meta


def missing_files(out_dir: Path, meta: Mapping[str, Any]) -> list[str]:
    """The files ``meta`` lists that ``out_dir`` lacks."""
    return [name for name in meta.get("files", []) if not (out_dir / name).is_file()]


def is_complete(out_dir: Path, meta: Mapping[str, Any]) -> bool:
    """Whether every file ``meta`` lists is in ``out_dir``."""
    return not missing_files(out_dir, meta)


class _LazySplits(Mapping[str, LanguagePairDataset]):
    """split -> dataset, each loaded from its ids files on first access."""

    def __init__(self, data: "PreparedData") -> None:
        self._data = data
        self._cache: dict[str, LanguagePairDataset] = {}

    def __getitem__(self, split: str) -> LanguagePairDataset:
        if split not in SPLITS:
            raise KeyError(split)
        if split not in self._cache:
            d = self._data
            self._cache[split] = LanguagePairDataset(
                load_binarized(binarized_path(d.path, split, d.src_lang), d.src_dict),
                load_binarized(binarized_path(d.path, split, d.tgt_lang), d.tgt_dict),
                d.src_dict,
                d.tgt_dict,
                d.src_lang,
                d.tgt_lang,
            )
        return self._cache[split]

    def __iter__(self) -> Iterator[str]:
        return iter(SPLITS)

    def __len__(self) -> int:
        return len(SPLITS)


@dataclass
class PreparedData:
    """A prepared folder: dictionaries, lazily loaded datasets, and paths to its text."""

    path: Path
    meta: dict[str, Any]
    src_dict: Dictionary
    tgt_dict: Dictionary
    datasets: Mapping[str, LanguagePairDataset] = field(init=False)

    def __post_init__(self) -> None:
        self.datasets = _LazySplits(self)

    @property
    def name(self) -> str:
        """The data config's name (``data.name``) the folder was prepared for."""
        return str(self.meta.get("name") or self.path.name)

    @property
    def src_lang(self) -> str:
        return str(self.meta["src_lang"])

    @property
    def tgt_lang(self) -> str:
        return str(self.meta["tgt_lang"])

    def split(self, name: str) -> LanguagePairDataset:
        """The dataset of split ``name`` (train, valid or test), loaded on first use."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        return self.datasets[name]

    def text_path(self, split: str, lang: str, stage: str = "bpe") -> Path | None:
        """Path of the ``bpe``, ``tok`` (Moses) or ``raw`` text of a split; None if not kept."""
        rel = {"bpe": f"{split}.{lang}", "tok": f"tok/{split}.{lang}", "raw": f"raw/{split}.{lang}"}[stage]
        return self.path / rel if rel in self.meta.get("files", []) else None

    def lines(self, split: str, lang: str, stage: str = "bpe") -> list[str]:
        path = self.text_path(split, lang, stage)
        if path is None:
            raise DataError(f"{self.path} keeps no {stage} text for {split}.{lang} (kind={self.meta.get('kind')})")
        return read_lines(path)


def load_prepared(out_dir: str | Path) -> PreparedData:
    """Open a folder made by :func:`pet.data.prepare.prepare_data`; DataError if it is not (fully) prepared."""
    out_dir = Path(out_dir).expanduser().resolve()
    meta = read_meta(out_dir) if out_dir.is_dir() else None
    if meta is None:
        raise DataError(
            f"{out_dir} holds no prepared data (no meta.json); run `pet stage=prepare data=...` first"
        )
    missing = missing_files(out_dir, meta)
    if missing:
        raise DataError(
            f"{out_dir} is incomplete (missing {', '.join(missing[:3])}); run `pet stage=prepare data=...` again"
        )
    return PreparedData(
        path=out_dir,
        meta=meta,
        src_dict=Dictionary.load(out_dir / f"dict.{meta['src_lang']}.txt"),
        tgt_dict=Dictionary.load(out_dir / f"dict.{meta['tgt_lang']}.txt"),
    )
