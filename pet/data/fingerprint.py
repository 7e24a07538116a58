"""What identifies a prepared data folder: the :class:`DataConfig` fields that
determine its files for each ``data.kind`` (checked here first), and the
contents (names, sizes, SHA-256) of the local source files they name, so that
an edited corpus is never mistaken for the prepared one. :mod:`pet.data.prepare`
records the fingerprint in ``meta.json``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pet.config.schema import DataConfig
from pet.data.iwslt import IWSLT14_URL, is_url
from pet.errors import ConfigError, DataError

KINDS = ("iwslt14", "parallel_text", "preprocessed", "demo")
# Bump when a change to pet.data changes prepared output for the same config.
PIPELINE_VERSION = 2

_COMMON_FIELDS = ("kind", "src_lang", "tgt_lang", "dict_padding_factor", "dict_threshold")
_TOKENIZE_FIELDS = ("lowercase", "moses_escape", "bpe_merges")
FINGERPRINT_FIELDS: dict[str, tuple[str, ...]] = {
    "iwslt14": _COMMON_FIELDS + ("source",) + _TOKENIZE_FIELDS + ("max_train_len", "max_len_ratio", "valid_every"),
    "parallel_text": _COMMON_FIELDS + ("source",) + _TOKENIZE_FIELDS + ("max_train_len", "max_len_ratio"),
    "preprocessed": _COMMON_FIELDS + ("source", "raw_source"),
    "demo": _COMMON_FIELDS + _TOKENIZE_FIELDS + ("demo_train_size", "demo_valid_size", "demo_test_size", "seed"),
}


def normalized_source(cfg: DataConfig) -> str | None:
    """``data.source`` as an absolute path or a URL (IWSLT'14's when the kind
    fetches it and none is given); None when there is none."""
    source = cfg.source
    if cfg.kind == "iwslt14" and not source:
        return IWSLT14_URL
    if not source:
        return None
    return source if is_url(source) else str(Path(source).expanduser().resolve())


class SourceMissing(DataError):
    """data.source or data.raw_source names nothing on this machine."""


def fingerprint_config(cfg: DataConfig, contents: bool = True) -> dict[str, Any]:
    """The DataConfig fields that determine the prepared files for ``cfg.kind``,
    and (``contents``) the contents of the local files they name."""
    check_config(cfg)
    fields: dict[str, Any] = {"pipeline_version": PIPELINE_VERSION}
    for name in FINGERPRINT_FIELDS[cfg.kind]:
        value = normalized_source(cfg) if name == "source" else getattr(cfg, name)
        if name == "raw_source" and value:
            value = str(Path(value).expanduser().resolve())
        fields[name] = value
        if contents and name in ("source", "raw_source") and value and not is_url(str(value)):
            only = corpus_file_names(cfg) if name == "source" else None
            fields[f"{name}_contents"] = content_digest(Path(str(value)), only)
    return fields


def corpus_file_names(cfg: DataConfig) -> set[str] | None:
    """The files of a ``data.source`` folder that prepare reads, for the kinds
    that read named files (None: every file counts). Anything else in the
    folder (a README, another language pair, a .git folder) is not the corpus."""
    if cfg.kind not in ("parallel_text", "preprocessed"):
        return None
    names = {f"{split}.{lang}" for split in ("train", "valid", "test") for lang in (cfg.src_lang, cfg.tgt_lang)}
    return names | {"code"} if cfg.kind == "preprocessed" else names


def content_digest(path: Path, only: set[str] | None = None) -> str:
    """SHA-256 over the names, sizes and bytes of ``path`` (a file, or the files
    under a folder: those named in ``only`` when given, else all but hidden
    ones): what makes an edited corpus a different corpus."""
    if not path.exists():
        raise SourceMissing(
            f"{path} does not exist; data.source (and data.raw_source) must name existing files or folders"
        )
    if path.is_file():
        files = [path]
    elif only is not None:
        files = sorted(path / name for name in only if (path / name).is_file())
    else:
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path) if f != path else f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def fingerprint_of(fields: Mapping[str, Any]) -> str:
    """A short hash of :func:`fingerprint_config`'s ``fields``."""
    blob = json.dumps(dict(fields), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()[:16]


def check_config(cfg: DataConfig) -> None:
    """ConfigError for a DataConfig that no kind can prepare."""
    if cfg.kind not in KINDS:
        raise ConfigError(f"data.kind={cfg.kind!r} is not valid; choose one of: {', '.join(KINDS)}")
    if not cfg.src_lang or not cfg.tgt_lang or cfg.src_lang == cfg.tgt_lang:
        raise ConfigError(
            f"data.src_lang={cfg.src_lang!r} and data.tgt_lang={cfg.tgt_lang!r} must be two different language codes"
        )
    if cfg.kind in ("parallel_text", "preprocessed") and not cfg.source:
        raise ConfigError(
            f"data.kind={cfg.kind} needs data.source: a folder holding "
            f"{{train,valid,test}}.{{{cfg.src_lang},{cfg.tgt_lang}}}"
        )
    if cfg.kind != "preprocessed" and cfg.bpe_merges < 1:
        raise ConfigError(f"data.bpe_merges={cfg.bpe_merges}: data.kind={cfg.kind} learns BPE; use at least 1")
    if cfg.dict_padding_factor < 1:
        raise ConfigError(f"data.dict_padding_factor={cfg.dict_padding_factor}: use 1 (no padding) or more")
    if cfg.kind in ("iwslt14", "parallel_text") and (cfg.max_train_len < 1 or cfg.max_len_ratio <= 0):
        raise ConfigError(
            f"data.max_train_len={cfg.max_train_len} / data.max_len_ratio={cfg.max_len_ratio}: "
            "both must be positive"
        )
    if cfg.kind == "iwslt14" and cfg.valid_every < 2:
        raise ConfigError(f"data.valid_every={cfg.valid_every}: must be 2 or more")
