"""Translate a test set, score it, and write fairseq-style outputs.

``translate_dataset`` is what ``stage=evaluate`` (and validation BLEU) calls:
length-sorted batches -> :class:`BeamSearch` -> hypotheses back in corpus
order -> tokenized BLEU and detokenized sacreBLEU -> optional files:

* ``out_path`` (e.g. ``generate-test.txt``): per sentence, in corpus order,
  fairseq-generate's lines ``S-id``, ``T-id``, ``H-id  score  text``,
  ``D-id  score  detokenized text``, ``P-id  per-token scores``; scores are in
  base 2, as fairseq prints them;
* next to it ``hyp.txt`` / ``ref.txt`` (BPE removed, tokenized: the text
  tokenized BLEU is computed on), ``hyp.detok.txt`` (the detokenized
  hypotheses sacreBLEU and chrF score) and, when raw references are given,
  ``ref.raw.txt`` (those references, untouched), so that
  ``sacrebleu ref.raw.txt -i hyp.detok.txt [-lc]`` reproduces the numbers.

Every file is written to a temporary name and renamed, so a killed job never
leaves a half-written output that looks complete.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from pet.data.batching import batch_by_size
from pet.generation.beam_search import BeamSearch, Hypothesis
from pet.generation.scoring import BleuScore, detokenize, detokenized_scores, tokenized_bleu

BPE_SYMBOL = "@@ "
log = logging.getLogger(__name__)


@dataclass
class TranslationResult:
    bleu: float  # tokenized BLEU (fairseq --remove-bpe)
    sacrebleu: Optional[float]  # standard sacreBLEU against raw references (None without them)
    sacrebleu_signature: Optional[str]
    n_sentences: int
    seconds: float  # wall time of batching + decoding (not scoring or writing)
    sentences_per_second: float
    tokens_per_second: float  # generated target tokens (best hypothesis, </s> included, as fairseq counts)
    n_generated_tokens: int
    hyps: list[str] = field(default_factory=list)  # BPE removed, tokenized, corpus order
    refs: list[str] = field(default_factory=list)
    bleu_detail: Optional[BleuScore] = None
    sacrebleu_detail: Optional[BleuScore] = None
    n_truncated: int = 0  # sources cut to the model's max_positions
    chrf: Optional[float] = None
    chrf_signature: Optional[str] = None
    detok_hyps: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"BLEU4 = {self.bleu:.2f}"]
        if self.sacrebleu is not None:
            parts.append(f"sacreBLEU = {self.sacrebleu:.2f} ({self.sacrebleu_signature})")
            parts.append(f"chrF = {self.chrf:.2f} ({self.chrf_signature})")
        parts.append(
            f"{self.n_sentences} sentences in {self.seconds:.1f}s "
            f"({self.sentences_per_second:.1f} sentences/s, {self.tokens_per_second:.1f} tokens/s)"
        )
        return ", ".join(parts)


def length_sorted_batches(
    src_sizes: Sequence[int],
    indices: Iterable[int],
    max_tokens: Optional[int],
    max_sentences: Optional[int],
) -> list[list[int]]:
    """Group ``indices`` into batches of similar source length.

    Sorted by source length (ties by index, so the grouping is deterministic);
    a batch grows while ``len(batch) * longest source`` stays within
    ``max_tokens`` and ``len(batch)`` within ``max_sentences`` (0/None = no
    limit). A sentence longer than ``max_tokens`` gets a batch of its own.
    """
    order = sorted(indices, key=lambda i: (int(src_sizes[i]), i))
    return batch_by_size(order, np.asarray(src_sizes), max_tokens or sys.maxsize, max_sentences)


def _strip(ids: torch.Tensor, pad: int, eos: int) -> torch.Tensor:
    ids = ids[ids.ne(pad)]
    if ids.numel() and int(ids[-1]) == eos:
        ids = ids[:-1]
    return ids


def _to_string(dictionary: Any, ids: torch.Tensor, escape_unk: bool = False) -> str:
    """``dictionary.string(ids, bpe_symbol="@@ ")``; references render <unk> as
    fairseq does (``escape_unk``) when the dictionary supports it, so an <unk> in
    a hypothesis never counts as matching an <unk> in the reference."""
    if escape_unk and _accepts(dictionary.string, "escape_unk"):
        return dictionary.string(ids, bpe_symbol=BPE_SYMBOL, escape_unk=True)
    return dictionary.string(ids, bpe_symbol=BPE_SYMBOL)


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cfg(cfg: Any, name: str, default: Any) -> Any:
    value = getattr(cfg, name, default)
    return default if value is None else value


def translate_dataset(
    model: torch.nn.Module,
    dataset: Any,
    src_dict: Any,
    tgt_dict: Any,
    cfg: Any,
    device: torch.device | str,
    out_path: Optional[str | os.PathLike] = None,
    tgt_lang: Optional[str] = None,
    references: Optional[Sequence[str]] = None,
    lowercase: bool = True,
    eos: int = 2,
    pad: int = 1,
    unk: int = 3,
) -> TranslationResult:
    """Beam-search every sentence of ``dataset`` and score against its targets.

    ``dataset`` is a ``LanguagePairDataset`` (``len``, ``src_sizes``,
    ``collate(indices) -> Batch``); ``cfg`` a ``GenerationConfig``. The model
    must already be on ``device``; batches are moved there. ``tgt_lang``
    (Moses detokenizer language) defaults to ``dataset.tgt_lang`` or ``"en"``.
    ``references``: the raw, untouched target lines of the whole split; with
    them sacreBLEU and chrF are scored (case-insensitively if ``lowercase``,
    i.e. when the model was trained on lowercased text), without them not.
    """
    device = torch.device(device)
    n_total = len(dataset)
    max_examples = int(_cfg(cfg, "max_examples", 0))
    n = min(n_total, max_examples) if max_examples > 0 else n_total
    batches = length_sorted_batches(
        dataset.src_sizes, range(n), int(_cfg(cfg, "max_tokens", 0)), int(_cfg(cfg, "max_sentences", 0))
    )
    # A source longer than the model's positions cannot be encoded: truncate it
    # (keeping </s>) rather than fail half-way through a test set.
    max_src = getattr(getattr(model, "spec", None), "max_positions", None)
    too_long = [i for i in range(n) if max_src and int(dataset.src_sizes[i]) > max_src]
    if too_long:
        log.warning("%d source sentence(s) longer than the model's %d positions are truncated to them "
                    "(the first: sentence %d, %d tokens)", len(too_long), max_src, too_long[0],
                    int(dataset.src_sizes[too_long[0]]))
    generator = BeamSearch(
        model,
        beam=int(_cfg(cfg, "beam", 5)),
        max_len_a=float(_cfg(cfg, "max_len_a", 1.2)),
        max_len_b=int(_cfg(cfg, "max_len_b", 10)),
        lenpen=float(_cfg(cfg, "lenpen", 1.0)),
        eos=eos,
        pad=pad,
        unk=unk,
    )

    best: dict[int, Hypothesis] = {}
    sources: dict[int, torch.Tensor] = {}
    targets: dict[int, torch.Tensor] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for indices in batches:
        batch = dataset.collate(indices)
        src_tokens = batch.src_tokens
        if max_src and src_tokens.size(1) > max_src:
            src_tokens = src_tokens[:, :max_src].clone()
            cut = src_tokens[:, -1].ne(pad)
            src_tokens[cut, -1] = eos
        hypos = generator.generate(src_tokens.to(device, non_blocking=True))
        for row, sid in enumerate(batch.ids.tolist()):
            best[sid] = hypos[row][0]
            sources[sid] = batch.src_tokens[row].cpu()
            targets[sid] = batch.target[row].cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    ids = sorted(best)
    n_tokens = sum(len(best[i]) for i in ids)
    hyps = [_to_string(tgt_dict, best[i].output_tokens) for i in ids]
    refs = [_to_string(tgt_dict, _strip(targets[i], pad, eos), escape_unk=True) for i in ids]

    bleu = tokenized_bleu(hyps, refs, bpe_symbol=None) if ids else None
    lang = tgt_lang or getattr(dataset, "tgt_lang", None) or "en"
    detok_hyps = [detokenize(h, lang) for h in hyps]
    sacre = chrf = None
    raw_refs: Optional[list[str]] = None
    if references is not None and ids and _cfg(cfg, "sacrebleu", True):
        if len(references) != n_total:
            raise ValueError(f"{len(references)} raw references for a split of {n_total} sentences")
        raw_refs = [references[i] for i in ids]
        # Exactly the lines of hyp.detok.txt (detokenized once: Moses
        # detokenization is not idempotent, "a 'b" -> "a'b").
        sacre, chrf = detokenized_scores(detok_hyps, raw_refs, lowercase)

    result = TranslationResult(
        bleu=bleu.score if bleu else 0.0,
        sacrebleu=sacre.score if sacre else None,
        sacrebleu_signature=sacre.signature if sacre else None,
        n_sentences=len(ids),
        seconds=seconds,
        sentences_per_second=len(ids) / seconds if seconds > 0 else 0.0,
        tokens_per_second=n_tokens / seconds if seconds > 0 else 0.0,
        n_generated_tokens=n_tokens,
        hyps=hyps,
        refs=refs,
        bleu_detail=bleu,
        sacrebleu_detail=sacre,
        chrf=chrf.score if chrf else None,
        chrf_signature=chrf.signature if chrf else None,
        detok_hyps=detok_hyps,
        n_truncated=len(too_long),
    )
    if out_path is not None:
        _write_outputs(Path(out_path), ids, sources, best, hyps, refs, detok_hyps, raw_refs, src_dict, pad, eos)
    return result


def _write_outputs(
    out_path: Path,
    ids: list[int],
    sources: dict[int, torch.Tensor],
    best: dict[int, Hypothesis],
    hyps: list[str],
    refs: list[str],
    detok_hyps: list[str],
    raw_refs: Optional[list[str]],
    src_dict: Any,
    pad: int,
    eos: int,
) -> None:
    ln2 = math.log(2)
    lines: list[str] = []
    for sid, hyp_str, ref_str, detok in zip(ids, hyps, refs, detok_hyps):
        hypo = best[sid]
        score = hypo.score / ln2  # fairseq prints base-2 scores
        lines.append(f"S-{sid}\t{_to_string(src_dict, _strip(sources[sid], pad, eos))}")
        lines.append(f"T-{sid}\t{ref_str}")
        lines.append(f"H-{sid}\t{score}\t{hyp_str}")
        lines.append(f"D-{sid}\t{score}\t{detok}")
        pos = " ".join(f"{x / ln2:.4f}" for x in hypo.positional_scores.tolist())
        lines.append(f"P-{sid}\t{pos}")
    folder = out_path.parent
    _write_atomic(out_path, lines)
    _write_atomic(folder / "hyp.txt", hyps)
    _write_atomic(folder / "ref.txt", refs)
    _write_atomic(folder / "hyp.detok.txt", detok_hyps)
    if raw_refs is not None:
        _write_atomic(folder / "ref.raw.txt", raw_refs)
