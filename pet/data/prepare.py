"""The ``prepare`` stage: turn a :class:`DataConfig` into a ready data folder.

One folder holds everything later stages need, so that they only ever read::

    {train,valid,test}.{src,tgt}        BPE text (what the model sees)
    {train,valid,test}.{src,tgt}.ids.pt token ids (pet.data.binarize)
    dict.{src}.txt, dict.{tgt}.txt      fairseq dictionaries, built on train only
    code                                BPE merge table (learned, or copied)
    tok/{split}.{lang}                  Moses-tokenized text (BLEU references)
    raw/{split}.{lang}                  untokenized text (sacreBLEU references)
    meta.json                           fingerprint of the config + counts

Kinds (``DataConfig.kind``):

* ``iwslt14``: fairseq's prepare-iwslt14.sh (:mod:`pet.data.iwslt`), then joint BPE;
* ``parallel_text``: ``data.source`` holds raw ``{split}.{lang}``; validated,
  Moses-tokenized, training pairs cleaned (``max_train_len``, ``max_len_ratio``),
  lowercased if ``data.lowercase``, then joint BPE;
* ``preprocessed``: ``data.source`` holds BPE text already (e.g. the shared
  ``iwslt14/bpe``); validated and copied, only dictionaries and ids are built;
  ``data.raw_source`` (a folder of raw ``{split}.{lang}`` files, or of IWSLT
  ``*.xml`` test files) gives the untouched references sacreBLEU needs;
* ``demo``: :mod:`pet.data.demo_corpus` writes ``raw/``, then as
  ``parallel_text`` but without length-ratio cleaning (a one-word German
  number legitimately becomes four English words) and with at most
  :data:`DEMO_MAX_BPE_MERGES` merges (see there).

Idempotent and safe to interrupt: ``meta.json`` is written last and only
after every other file was renamed into place, so a folder with ``meta.json``
is complete. The fingerprint covers the config and the contents (sizes and
SHA-256) of local source files (:mod:`pet.data.fingerprint`), so an edited
corpus is never mistaken for the prepared one. A matching fingerprint means
"already done"; a different one is an error rather than a silent overwrite
(other runs may be reading the folder). A prepared folder whose source is
gone (moved, deleted, or the folder copied to another machine) is used as it
is when every setting matches, with a warning. Concurrent prepares of one folder (a
sweep starting N jobs) serialise on a lock file. :mod:`pet.data.prepared`
opens the finished folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pet.config.schema import DataConfig
from pet.data.binarize import binarize_lines, binarized_path, save_binarized
from pet.data.bpe import apply_bpe_lines, learn_joint_bpe, load_bpe
from pet.data.corpus import check_folder
from pet.data.demo_corpus import write_demo_corpus
from pet.data.dictionary import Dictionary
from pet.data.fileio import atomic_write_lines, atomic_write_text, read_lines
from pet.data.fingerprint import SourceMissing, fingerprint_config, fingerprint_of, normalized_source
from pet.data.iwslt import fetch_iwslt14, read_iwslt14, test_segments
from pet.data.prepared import META_FORMAT, SPLITS, is_complete, read_meta
from pet.data.text import MosesPipeline, clean_pairs, lowercase
from pet.errors import DataError

try:
    import fcntl
except ImportError:  # non-POSIX: _folder_lock then locks nothing
    fcntl = None

log = logging.getLogger(__name__)

# The demo corpus has only a few hundred word types per language, mostly
# compounds of ~40 number morphemes; 10k merges would memorise every whole
# word (no subword sharing between "dreihundertvierundfünfzig" and
# "vierundfünfzig"). 1,000 merges learns the morphemes and frequent
# compounds and leaves rare numbers split into them.
DEMO_MAX_BPE_MERGES = 1000

Splits = dict[str, dict[str, list[str]]]


def _config_name(cfg: DataConfig) -> str | None:
    try:  # an OmegaConf node raises on a missing (???) value
        name = cfg.name
    except Exception:
        return None
    return None if name in (None, "???") else str(name)


@contextlib.contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    """Serialise prepares of one folder across processes (POSIX advisory lock)."""
    if fcntl is None:  # non-POSIX: no lock, atomic renames still protect files
        yield
        return
    with open(out_dir / ".prepare.lock", "a") as lock:  # "a": never truncates or touches it
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------ text steps
def _moses(cfg: DataConfig, splits: Splits, *, clean: bool) -> tuple[Splits, Splits, dict[str, int]]:
    """Tokenize raw splits; clean the training pairs (Moses); lowercase (in that order, as fairseq)."""
    src, tgt = cfg.src_lang, cfg.tgt_lang
    tok: Splits = {}
    raw: Splits = {}
    stats: dict[str, int] = {}
    for split in SPLITS:
        t = {lang: MosesPipeline(lang, escape=cfg.moses_escape).tokenize_lines(splits[split][lang]) for lang in (src, tgt)}
        r = splits[split]
        if split == "train" and clean:
            keep, t_src, t_tgt = clean_pairs(
                t[src], t[tgt], min_len=1, max_len=cfg.max_train_len, ratio=cfg.max_len_ratio
            )
            stats["train_before_clean"] = len(t[src])
            stats["train_after_clean"] = len(keep)
            log.info("cleaning dropped %d of %d training pairs (longer than data.max_train_len=%d tokens, empty, "
                     "or length ratio above data.max_len_ratio=%g)", len(t[src]) - len(keep), len(t[src]),
                     cfg.max_train_len, cfg.max_len_ratio)
            t = {src: t_src, tgt: t_tgt}
            r = {lang: [r[lang][k] for k in keep] for lang in (src, tgt)}
            if not keep:
                raise DataError(
                    f"{cfg.source}: no training pair survives cleaning (1..{cfg.max_train_len} tokens, "
                    f"length ratio <= {cfg.max_len_ratio}); raise data.max_train_len or data.max_len_ratio"
                )
        if cfg.lowercase:
            t = {lang: [lowercase(line) for line in lines] for lang, lines in t.items()}
        tok[split], raw[split] = t, r
    return raw, tok, stats


def _raw_text(cfg: DataConfig, out_dir: Path) -> tuple[Splits, Splits, dict[str, Any]]:
    """(raw, tokenized) splits for the kinds that tokenize and learn BPE."""
    src, tgt = cfg.src_lang, cfg.tgt_lang
    if cfg.kind == "iwslt14":
        location = fetch_iwslt14(cfg.source, out_dir / "orig")
        text = read_iwslt14(
            location, src, tgt, lowercase=cfg.lowercase, escape=cfg.moses_escape,
            max_len=cfg.max_train_len, ratio=cfg.max_len_ratio, valid_every=cfg.valid_every,
        )
        return text.raw, text.tok, {**text.stats, "test_files": text.test_files}
    if cfg.kind == "demo":
        folder = out_dir / "raw"
        write_demo_corpus(
            folder, train_size=cfg.demo_train_size, valid_size=cfg.demo_valid_size,
            test_size=cfg.demo_test_size, seed=cfg.seed, src_lang=src, tgt_lang=tgt,
        )
        clean = False
    else:
        folder = Path(normalized_source(cfg) or "")
        clean = True
    files = check_folder(folder, src, tgt, SPLITS)
    splits = {s: {src: files[s].src, tgt: files[s].tgt} for s in SPLITS}
    raw, tok, stats = _moses(cfg, splits, clean=clean)
    return raw, tok, stats


def _raw_references(cfg: DataConfig, bpe_text: Splits) -> Splits:
    """The untouched text of whichever splits ``data.raw_source`` holds: raw
    ``{split}.{lang}`` files, or IWSLT ``*.xml`` files (the test split, in
    fairseq's order). Each must have the prepared split's number of lines."""
    folder = Path(cfg.raw_source).expanduser().resolve()
    langs = (cfg.src_lang, cfg.tgt_lang)
    if any(folder.glob("IWSLT*.xml")):
        raw, _ = test_segments(folder, f"{cfg.src_lang}-{cfg.tgt_lang}", *langs)
        found: Splits = {"test": raw}
    else:
        found = {split: {lang: read_lines(folder / f"{split}.{lang}") for lang in langs} for split in SPLITS
                 if all((folder / f"{split}.{lang}").is_file() for lang in langs)}
    if not found:
        raise DataError(f"data.raw_source={folder} holds no {{train,valid,test}}.{{{','.join(langs)}}} files "
                        "and no IWSLT*.xml test files")
    for split, by_lang in found.items():
        for lang, lines in by_lang.items():
            if len(lines) != len(bpe_text[split][lang]):
                raise DataError(
                    f"data.raw_source={folder} has {len(lines)} {split}.{lang} lines but data.source has "
                    f"{len(bpe_text[split][lang])}; the raw references must be the same sentences in the same order"
                )
    return found


def _bpe_merges(cfg: DataConfig) -> int:
    return min(cfg.bpe_merges, DEMO_MAX_BPE_MERGES) if cfg.kind == "demo" else cfg.bpe_merges


# ------------------------------------------------------------------ prepare
def prepare_data(cfg: DataConfig, out_dir: Path) -> Path:
    """Build (or find already built) the prepared folder ``out_dir`` for ``cfg``; returns it."""
    out_dir = Path(out_dir).expanduser().resolve()
    try:
        fields = fingerprint_config(cfg)
    except SourceMissing as missing:
        if _usable_without_source(cfg, out_dir):
            log.warning("%s; using the data already prepared in %s as it is (its source cannot be checked)",
                        missing, out_dir)
            return out_dir
        raise
    fingerprint = fingerprint_of(fields)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out_dir):
        meta = read_meta(out_dir)
        if meta is not None:
            if meta.get("fingerprint") != fingerprint:
                old = meta.get("config", {})
                changed = sorted(k for k in set(old) | set(fields) if old.get(k) != fields.get(k))
                detail = ", ".join(f"{k}: {old.get(k)!r} -> {fields.get(k)!r}" for k in changed)
                raise DataError(
                    f"{out_dir} already holds data prepared from another data config ({detail}); "
                    "delete that folder, or give this config its own folder (another data.name or paths.data_root)"
                )
            if is_complete(out_dir, meta):
                log.info("data already prepared in %s (fingerprint %s)", out_dir, fingerprint)
                return out_dir
            log.warning("%s: meta.json matches but files are missing; preparing again", out_dir)
            (out_dir / "meta.json").unlink()
        start = time.perf_counter()
        meta = _prepare(cfg, out_dir)
        meta.update(
            format=META_FORMAT,
            fingerprint=fingerprint,
            config=fields,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - start, 2),
        )
        atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        log.info("prepared %s in %.1fs", out_dir, meta["seconds"])
    return out_dir


def _usable_without_source(cfg: DataConfig, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds complete data prepared from ``cfg`` as far as
    can be told without its source files (moved, deleted, or on another
    machine): every setting matches, only the source contents go unchecked."""
    meta = read_meta(out_dir) if out_dir.is_dir() else None
    if meta is None or not is_complete(out_dir, meta):
        return False
    recorded = {k: v for k, v in meta.get("config", {}).items() if not k.endswith("_contents")}
    return recorded == fingerprint_config(cfg, contents=False)


def _prepare(cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    src, tgt = cfg.src_lang, cfg.tgt_lang
    langs = (src, tgt)
    files: list[str] = []
    meta: dict[str, Any] = {"name": _config_name(cfg), "kind": cfg.kind, "src_lang": src, "tgt_lang": tgt}

    if cfg.kind == "preprocessed":
        source = Path(normalized_source(cfg) or "")
        checked = check_folder(source, src, tgt, SPLITS)
        bpe_text: Splits = {s: {src: checked[s].src, tgt: checked[s].tgt} for s in SPLITS}
        if (source / "code").is_file():
            atomic_write_text(out_dir / "code", (source / "code").read_text(encoding="utf-8"))
            files.append("code")
        meta["bpe_merges"] = None
        if cfg.raw_source:
            (out_dir / "raw").mkdir(exist_ok=True)
            for split, by_lang in _raw_references(cfg, bpe_text).items():
                for lang, lines in by_lang.items():
                    atomic_write_lines(out_dir / "raw" / f"{split}.{lang}", lines)
                    files.append(f"raw/{split}.{lang}")
    else:
        raw, tok, stats = _raw_text(cfg, out_dir)
        meta["stats"] = stats
        for sub, splits in (("raw", raw), ("tok", tok)):
            (out_dir / sub).mkdir(exist_ok=True)
            for split in SPLITS:
                for lang in langs:
                    atomic_write_lines(out_dir / sub / f"{split}.{lang}", splits[split][lang])
                    files.append(f"{sub}/{split}.{lang}")
        merges = _bpe_merges(cfg)
        log.info("learning %d joint BPE merges on tok/train.%s + tok/train.%s", merges, src, tgt)
        learn_joint_bpe([out_dir / "tok" / f"train.{lang}" for lang in langs], out_dir / "code", merges)
        files.append("code")
        meta["bpe_merges"] = merges
        bpe = load_bpe(out_dir / "code")
        bpe_text = {s: {lang: list(apply_bpe_lines(bpe, tok[s][lang])) for lang in langs} for s in SPLITS}

    for split in SPLITS:
        for lang in langs:
            atomic_write_lines(out_dir / f"{split}.{lang}", bpe_text[split][lang])
            files.append(f"{split}.{lang}")

    dicts: dict[str, Dictionary] = {}
    for lang in langs:
        d = Dictionary()
        d.add_lines(bpe_text["train"][lang])
        d.finalize(threshold=cfg.dict_threshold, padding_factor=cfg.dict_padding_factor)
        d.save(out_dir / f"dict.{lang}.txt")
        files.append(f"dict.{lang}.txt")
        dicts[lang] = d

    split_meta: dict[str, Any] = {}
    for split in SPLITS:
        entry: dict[str, Any] = {"pairs": len(bpe_text[split][src])}
        for lang in langs:
            arr = binarize_lines(bpe_text[split][lang], dicts[lang])
            path = binarized_path(out_dir, split, lang)
            save_binarized(arr, path)
            files.append(path.name)
            entry[f"{lang}_tokens"] = arr.num_tokens
            entry[f"{lang}_unk"] = arr.num_unk
        split_meta[split] = entry
    meta["splits"] = split_meta
    meta["dict_sizes"] = {lang: len(dicts[lang]) for lang in langs}
    meta["files"] = files
    return meta
