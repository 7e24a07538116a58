"""A model's own text pipeline: raw text in, subword tokens out, and back.

The steps are those ``stage=prepare`` ran on the model's training corpus, so
that a raw test sentence becomes exactly the tokens ``stage=evaluate`` feeds
the model, and a hypothesis becomes exactly the text evaluate scores
(``hyp.detok.txt``):

* in: for IWSLT-style corpora (``data.kind`` iwslt14 and preprocessed) the
  typographic apostrophe ’ becomes ' (fairseq's recipe does so to the test
  text); Moses tokenization (:class:`pet.data.text.MosesPipeline`, XML
  escaping as ``data.moses_escape``, no aggressive hyphen splitting);
  lowercasing when the model was trained so (``data.lowercase``); the joint
  subword-nmt BPE of the corpus; the source dictionary (unknown -> ``<unk>``,
  then ``</s>``);
* out: the target dictionary's symbols, BPE removed (fairseq's
  ``--remove-bpe``), Moses detokenization and the typographic apostrophe
  re-attached (:func:`pet.generation.scoring.detokenize`). A lowercased model
  writes lowercase; nothing restores case.

Where it comes from:

* a checkpoint carries it under ``text_pipeline`` (settings and the BPE merge
  table, ~100 kB for 10k merges): :func:`pet.checkpoint.save_checkpoint` adds
  it to every checkpoint whose config names a prepared corpus that has a merge
  table, so a checkpoint translates raw text on a machine without the data
  folder;
* for a checkpoint written without it, :meth:`TextPipeline.from_checkpoint`
  rebuilds it from the checkpoint's data config and the merge table in the
  corpus' prepared folder (``<paths.data_root>/<data.name>/code``), or for
  ``data.kind=preprocessed`` in ``data.source``; when neither exists it says so;
* an exported model folder holds it as two small files (:meth:`save`,
  :meth:`load`): ``pet_text.json`` (languages, lowercase, tokenizer settings,
  BPE separator) and ``bpe.codes`` (the merge table). Dictionaries are not
  written there: a pet checkpoint carries its own, and other runtimes keep
  their own vocabularies.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from subword_nmt.apply_bpe import BPE

from pet.checkpoint import load_checkpoint
from pet.data.dictionary import Dictionary
from pet.data.fileio import atomic_write_text
from pet.data.text import MosesPipeline
from pet.errors import CheckpointError, DataError
from pet.generation.scoring import detokenize, remove_bpe

log = logging.getLogger(__name__)

FORMAT = "pet-text-v1"
SETTINGS_FILE = "pet_text.json"
CODES_FILE = "bpe.codes"
# The checkpoint key that holds TextPipeline.to_dict().
CHECKPOINT_KEY = "text_pipeline"
# The merge table's name in a prepared data folder (pet.data.prepare) and in a
# data.kind=preprocessed source folder.
PREPARED_CODES = "code"
# Corpora made by fairseq's IWSLT recipe: it turns ’ into ' before tokenizing
# the test text (pet.data.iwslt does the same).
_STRAIGHTEN_KINDS = ("iwslt14", "preprocessed")


@dataclass
class TextPipeline:
    """Raw text <-> the subword tokens of one trained model (see module doc)."""

    src_lang: str
    tgt_lang: str
    bpe_codes: str = field(repr=False)  # subword-nmt merge table, as its file holds it
    lowercase: bool = True
    moses_escape: bool = True
    straighten_apostrophe: bool = False
    bpe_separator: str = "@@"
    corpus: str = ""  # data.name, for messages
    src_dict: Optional[Any] = field(default=None, repr=False, compare=False)
    tgt_dict: Optional[Any] = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------ text steps
    @functools.cached_property
    def _bpe(self):
        return BPE(io.StringIO(self.bpe_codes, newline="\n"), separator=self.bpe_separator)

    @functools.cached_property
    def _moses(self):
        return MosesPipeline(self.src_lang, escape=self.moses_escape, lowercase=self.lowercase)

    def tokenize(self, line: str) -> str:
        """One raw source line -> Moses tokens (lowercased if the model was trained so)."""
        if self.straighten_apostrophe:
            line = line.replace("\u2019", "'")
        return self._moses.tokenize(line)

    def encode(self, line: str) -> list[str]:
        """One raw source line -> the BPE tokens the model reads (no ``</s>``)."""
        return self._bpe.process_line(self.tokenize(line)).split()

    def encode_ids(self, line: str) -> torch.Tensor:
        """One raw source line -> source ids ending with ``</s>`` (needs ``src_dict``)."""
        if self.src_dict is None:
            raise ValueError("this TextPipeline has no source dictionary; use with_dictionaries(...)")
        return self.src_dict.encode_line(" ".join(self.encode(line)))

    def decode(self, tokens: Sequence[str] | str) -> str:
        """Target BPE tokens (a list or one space-separated string) -> readable text."""
        text = tokens if isinstance(tokens, str) else " ".join(tokens)
        return detokenize(remove_bpe(text, self.bpe_separator + " "), self.tgt_lang)

    def decode_ids(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Target ids -> readable text, as evaluate writes ``hyp.detok.txt`` (needs ``tgt_dict``)."""
        if self.tgt_dict is None:
            raise ValueError("this TextPipeline has no target dictionary; use with_dictionaries(...)")
        return detokenize(self.tgt_dict.string(ids, bpe_symbol=self.bpe_separator + " "), self.tgt_lang)

    def with_dictionaries(self, src_dict: Any, tgt_dict: Any) -> "TextPipeline":
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        return self

    # ---------------------------------------------------------- persistence
    def settings(self) -> dict[str, Any]:
        """Everything but the merge table and the dictionaries (``pet_text.json``)."""
        return {
            "format": FORMAT,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "lowercase": self.lowercase,
            "tokenizer": {
                "name": "moses",
                "escape": self.moses_escape,
                "aggressive_dash_splits": False,
                "straighten_apostrophe": self.straighten_apostrophe,
            },
            "bpe": {"name": "subword_nmt", "separator": self.bpe_separator},
            "corpus": self.corpus,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (what a checkpoint stores under ``text_pipeline``)."""
        return {**self.settings(), "bpe_codes": self.bpe_codes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], codes: Optional[str] = None, where: str = "text pipeline") -> "TextPipeline":
        if d.get("format") != FORMAT:
            raise DataError(f"{where} is not a {FORMAT} text pipeline (format {d.get('format')!r}); "
                            "it was written by another version of pet")
        tok, bpe = d.get("tokenizer") or {}, d.get("bpe") or {}
        if tok.get("name", "moses") != "moses" or bpe.get("name", "subword_nmt") != "subword_nmt":
            raise DataError(f"{where}: tokenizer {tok.get('name')!r} / BPE {bpe.get('name')!r} are not supported "
                            "(pet writes moses and subword_nmt)")
        codes = codes if codes is not None else d.get("bpe_codes")
        if not codes:
            raise DataError(f"{where} holds no BPE merge table")
        return cls(
            src_lang=str(d["src_lang"]),
            tgt_lang=str(d["tgt_lang"]),
            bpe_codes=codes,
            lowercase=bool(d.get("lowercase", True)),
            moses_escape=bool(tok.get("escape", True)),
            straighten_apostrophe=bool(tok.get("straighten_apostrophe", False)),
            bpe_separator=str(bpe.get("separator", "@@")),
            corpus=str(d.get("corpus") or ""),
        )

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write ``pet_text.json`` and ``bpe.codes`` into ``folder``; returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**self.settings(), "bpe_codes_file": CODES_FILE}
        atomic_write_text(folder / CODES_FILE, self.bpe_codes)
        atomic_write_text(folder / SETTINGS_FILE, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        return [folder / SETTINGS_FILE, folder / CODES_FILE]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "TextPipeline":
        """The pipeline :meth:`save` wrote into ``folder`` (without dictionaries)."""
        folder = Path(folder)
        path = folder / SETTINGS_FILE
        if not path.is_file():
            raise DataError(f"{folder} holds no {SETTINGS_FILE}: it is not a folder a pet text pipeline was saved "
                            "to (an exported model folder has one)")
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataError(f"{path} is not valid JSON ({e}); export the model again") from None
        codes_path = folder / str(settings.get("bpe_codes_file") or CODES_FILE)
        if not codes_path.is_file():
            raise DataError(f"{folder} holds {SETTINGS_FILE} but not its BPE merge table {codes_path.name}; "
                            "export the model again")
        return cls.from_dict(settings, codes=_read_codes(codes_path), where=str(path))

    # ------------------------------------------------------- from a corpus
    @classmethod
    def from_data_config(cls, data: Mapping[str, Any] | Any, folders: Sequence[str | os.PathLike[str]]) -> "TextPipeline":
        """The pipeline ``stage=prepare`` ran for the data config ``data``, with the
        merge table found in the first of ``folders`` that has one (prepared
        data folders; for ``kind=preprocessed`` also ``data.source``)."""
        get = data.get if isinstance(data, Mapping) else (lambda k, default=None: getattr(data, k, default))
        kind = str(get("kind", "preprocessed"))
        candidates = [Path(f) for f in folders]
        if kind == "preprocessed" and get("source"):
            candidates.append(Path(str(get("source"))).expanduser())
        codes_path = next((f / PREPARED_CODES for f in candidates if (f / PREPARED_CODES).is_file()), None)
        name = str(get("name", "") or "")
        if codes_path is None:
            where = ", ".join(str(f) for f in candidates) or "(no folder)"
            if kind == "preprocessed":
                raise DataError(
                    f"corpus {name or '?'} (data.kind=preprocessed, data.source={get('source')}) has no BPE merge "
                    f"table: none of {where} holds a '{PREPARED_CODES}' file. Raw text cannot be segmented the way "
                    f"its training text was; put the subword-nmt merge table that produced it at "
                    f"<data.source>/{PREPARED_CODES}: translate then finds it there, and a fresh prepare (delete "
                    f"{candidates[0] if folders else 'the prepared folder'} first, since its source changed) copies "
                    "it into the prepared data, so that checkpoints trained on it carry it"
                )
            raise DataError(
                f"the BPE merge table of corpus {name or '?'} is not here: none of {where} holds a "
                f"'{PREPARED_CODES}' file; prepare the corpus on this machine (pet stage=prepare data={name or '...'}) "
                "or translate where it was prepared"
            )
        return cls(
            src_lang=str(get("src_lang")),
            tgt_lang=str(get("tgt_lang")),
            bpe_codes=_read_codes(codes_path),
            lowercase=bool(get("lowercase", True)),
            moses_escape=bool(get("moses_escape", True)),
            straighten_apostrophe=kind in _STRAIGHTEN_KINDS,
            corpus=name,
        )

    # --------------------------------------------------- from a checkpoint
    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any] | str | os.PathLike[str],
        *,
        data_root: Optional[str | os.PathLike[str]] = None,
        where: Optional[str] = None,
    ) -> "TextPipeline":
        """The pipeline of a pet checkpoint (a loaded dict or its path), with its dictionaries.

        The checkpoint's own ``text_pipeline`` when it has one; otherwise
        rebuilt from its data config and the corpus' merge table in
        ``<data_root>/<data.name>`` (``data_root``: this machine's
        ``paths.data_root``) or in the data folder recorded at training time.
        """
        if not isinstance(ckpt, Mapping):
            where = where or str(ckpt)
            ckpt = load_checkpoint(ckpt)
        where = where or "the checkpoint"
        stored = ckpt.get(CHECKPOINT_KEY)
        if stored:
            pipeline = cls.from_dict(stored, where=f"{where} ({CHECKPOINT_KEY})")
        else:
            config = ckpt.get("config") or {}
            data = config.get("data")
            if not data:
                raise CheckpointError(
                    f"{where} carries neither its text pipeline nor the data config it was trained on, so raw text "
                    "cannot be prepared for it; use a checkpoint written by pet's training stages"
                )
            folders = [Path(data_root) / str(data.get("name"))] if data_root else []
            trained_root = (config.get("paths") or {}).get("data_root")
            if trained_root:
                folders.append(Path(str(trained_root)) / str(data.get("name")))
            try:
                pipeline = cls.from_data_config(data, list(dict.fromkeys(folders)))
            except DataError as e:
                raise DataError(f"{where} was saved without its text pipeline, and {e}") from None
        return pipeline.with_dictionaries(Dictionary.from_list(ckpt["src_dict"]), Dictionary.from_list(ckpt["tgt_dict"]))


def _read_codes(path: Path) -> str:
    with open(path, encoding="utf-8", newline="\n") as f:
        return f.read()


@functools.lru_cache(maxsize=8)
def _cached_state(codes_path: str, mtime_ns: int, size: int, settings: str) -> dict[str, Any]:
    data = json.loads(settings)
    return TextPipeline.from_data_config(data, [Path(codes_path).parent]).to_dict()


def checkpoint_text_state(config: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """What a checkpoint trained with the resolved ``config`` stores under
    ``text_pipeline``: its corpus' pipeline with the merge table read from the
    prepared data folder. None when the config names no prepared corpus or
    that folder has no merge table (a preprocessed corpus shipped without one)."""
    if not isinstance(config, Mapping):
        return None
    data, paths = config.get("data"), config.get("paths")
    if not isinstance(data, Mapping) or not isinstance(paths, Mapping):
        return None
    name, root = data.get("name"), paths.get("data_root")
    if not name or not root or not data.get("src_lang") or not data.get("tgt_lang"):
        return None
    codes = Path(str(root)) / str(name) / PREPARED_CODES
    try:
        st = codes.stat()
    except OSError:
        return None
    keys = ("name", "kind", "src_lang", "tgt_lang", "lowercase", "moses_escape")
    settings = json.dumps({k: data.get(k) for k in keys}, sort_keys=True)
    try:
        return dict(_cached_state(str(codes), st.st_mtime_ns, st.st_size, settings))
    except (DataError, OSError, ValueError) as e:
        log.warning("checkpoint saved without its text pipeline (%s)", e)
        return None
