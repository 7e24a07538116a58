"""stage=translate: raw text, one sentence per line -> translations, one per line.

``pet stage=translate init_from=<checkpoint .pt> [translate.input=<file>]
[translate.output=<file>]`` reads standard input and writes standard output
when no file is named. Each line goes through the model's own text pipeline
(:class:`pet.generation.text_pipeline.TextPipeline`: Moses tokenization,
lowercasing if the model was trained so, its BPE and dictionary), is
beam-searched (``generation.beam``, ``generation.max_len_a/b``, length
penalty ``translate.lenpen`` or else ``generation.lenpen``) in length-sorted
batches (``generation.max_tokens`` / ``max_sentences``), and comes back
detokenized, in input order: a test sentence comes out exactly as evaluate
writes it to ``hyp.detok.txt``. A blank input line gets an empty translation
without running the model.

Output, one of:

* ``translate.nbest=1``: one translation per input line;
* ``translate.nbest=N`` (N <= ``generation.beam``): up to N lines per input
  line, best first, each ``<line number>\\t<score>\\t<translation>``: the
  input line's number counting from 0 (fairseq's sentence ids), the
  hypothesis' length-normalised log-probability in base 2 (as fairseq and
  evaluate's ``generate-<split>.txt`` print scores; 0 for a blank line, which
  gets one line).

``translate.backend=ctranslate2`` runs a model exported for CTranslate2
instead (``init_from=<exported folder>``, which holds the text pipeline's
files). With standard output as the output, the translations are the only
thing written there: everything else this process prints goes to standard
error (``stage=translate`` also sends its log lines there).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.data.corpus import decode_utf8
from pet.data.fileio import atomic_write_lines, split_lines
from pet.errors import ConfigError, DataError
from pet.export.translator import CT2Translator
from pet.generation.beam_search import BeamSearch
from pet.generation.text_pipeline import TextPipeline
from pet.generation.translate import length_sorted_batches
from pet.runtime import configure_threads, select_device
from pet.stages.common import StageResult, finish_stage
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)

LN2 = math.log(2)
# (translation, base-2 score) of one hypothesis
Hypotheses = list[tuple[str, float]]


@dataclass
class TranslateStats:
    sentences: int = 0  # input lines
    translated: int = 0  # non-blank input lines (the model ran on them)
    seconds: float = 0.0  # batching + decoding + text processing
    generated_tokens: int = 0  # best hypotheses' tokens, </s> included (as evaluate counts)
    truncated: int = 0  # sources cut to the model's max_positions


# ------------------------------------------------------------------ input/output
def read_input(path: Optional[str]) -> list[str]:
    """The lines of ``path`` (standard input when None), UTF-8, newlines removed."""
    where = "standard input" if path is None else f"translate.input={path}"
    if path is None:
        if sys.stdin.isatty():
            log.info("reading sentences from standard input, one per line (end with Ctrl-D)")
        raw = sys.stdin.buffer.read()
    else:
        p = Path(str(path)).expanduser()
        if not p.is_file():
            raise DataError(f"{where} does not exist (or is not a file); name a text file with one sentence per line")
        raw = p.read_bytes()
    text = decode_utf8(raw, where)
    return [line[:-1] if line.endswith("\r") else line for line in split_lines(text)]


def format_output(results: Sequence[Hypotheses], nbest: int) -> list[str]:
    """Output lines for the hypotheses of every input line (see module doc)."""
    if nbest <= 1:
        return [hyps[0][0] if hyps else "" for hyps in results]
    lines = []
    for i, hyps in enumerate(results):
        for text, score in hyps or [("", 0.0)]:
            lines.append(f"{i}\t{score:.4f}\t{text}")
    return lines


def _claim_stdout() -> IO[str]:
    """Standard output for the translations alone: the stream they are written
    to, while ``sys.stdout`` becomes standard error for everything else this
    process prints (log lines, the closing summary)."""
    out = sys.stdout
    out.flush()
    sys.stdout = sys.stderr
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (out, sys.__stdout__):
            handler.setStream(sys.stderr)
    return out


# ------------------------------------------------------------------ backends
class PetBackend:
    """A pet checkpoint (plain, pruned or PET) with beam search on ``device``."""

    def __init__(self, ckpt: dict[str, Any], where: str, device: torch.device, data_root: Optional[str] = None):
        self.pipeline = TextPipeline.from_checkpoint(ckpt, data_root=data_root, where=where)
        self.pipeline.encode("")  # builds the tokenizer and BPE now, not inside the timed decoding
        self.model = model_from_checkpoint(ckpt).to(device).eval()
        self.device = device

    def translate(self, lines: Sequence[str], gen: Any, lenpen: float, nbest: int, stats: TranslateStats,
                  bar: Any = None) -> list[Hypotheses]:
        p, model = self.pipeline, self.model
        src_dict = p.src_dict
        pad, eos = src_dict.pad, src_dict.eos
        # A line with nothing to translate (blank, or only characters the tokenizer
        # drops) stays empty, as with the ctranslate2 backend.
        ids = {i: t for i, line in enumerate(lines) if line.strip() and (t := p.encode_ids(line)).numel() > 1}
        sizes = np.zeros(len(lines), dtype=np.int64)
        for i, t in ids.items():
            sizes[i] = t.numel()
        batches = length_sorted_batches(sizes, list(ids), int(gen.max_tokens or 0), int(gen.max_sentences or 0))
        generator = BeamSearch(model, beam=int(gen.beam), max_len_a=float(gen.max_len_a), max_len_b=int(gen.max_len_b),
                               lenpen=lenpen, eos=p.tgt_dict.eos, pad=p.tgt_dict.pad, unk=p.tgt_dict.unk)
        # A source longer than the model's positions cannot be encoded: it is
        # truncated (keeping </s>), as evaluate does.
        max_src = model.spec.max_positions
        stats.truncated += sum(1 for t in ids.values() if t.numel() > max_src)
        results: list[Hypotheses] = [[] for _ in lines]
        for batch in batches:
            src = torch.full((len(batch), int(sizes[batch].max())), pad, dtype=torch.long)
            for row, i in enumerate(batch):
                src[row, : ids[i].numel()] = ids[i]
            if src.size(1) > max_src:
                src = src[:, :max_src].clone()
                src[src[:, -1].ne(pad), -1] = eos
            hypos = generator.generate(src.to(self.device, non_blocking=True))
            for row, i in enumerate(batch):
                results[i] = [(p.decode_ids(h.output_tokens), h.score / LN2) for h in hypos[row][:nbest]]
                stats.generated_tokens += len(hypos[row][0])
            if bar is not None:
                bar.update(len(batch))
        stats.translated += len(ids)
        return results


def _ct2_translator_class() -> Any:
    # The engine CT2Backend drives (a seam: tests put a fake engine here).
    # CT2Translator imports ctranslate2 only when it is built, so this stage
    # imports without the optional package.
    return CT2Translator


class CT2Backend:
    """A model exported for CTranslate2 (:class:`pet.export.translator.CT2Translator`,
    which applies pet's decoding rules and source truncation); its folder holds
    the text pipeline's files. Its scores (natural log) are written in base 2."""

    def __init__(self, folder: Path, threads: int, compute_type: str, device: str = "cpu"):
        self.pipeline = TextPipeline.load(folder)
        self.pipeline.encode("")  # builds the tokenizer and BPE now, not inside the timed decoding
        self.translator = _ct2_translator_class()(str(folder), threads=threads, compute_type=compute_type,
                                                  device=device)

    def translate(self, lines: Sequence[str], gen: Any, lenpen: float, nbest: int, stats: TranslateStats,
                  bar: Any = None) -> list[Hypotheses]:
        p = self.pipeline
        tokens = {i: t for i, line in enumerate(lines) if line.strip() and (t := p.encode(line))}
        sizes = np.zeros(len(lines), dtype=np.int64)
        for i, t in tokens.items():
            sizes[i] = len(t) + 1  # with </s>, as the pet backend counts
        batches = length_sorted_batches(sizes, list(tokens), int(gen.max_tokens or 0), int(gen.max_sentences or 0))
        # The engine's wrapper cuts a source to the model's positions, as pet does.
        max_src = getattr(self.translator, "max_positions", None)
        stats.truncated += sum(1 for i in tokens if max_src and int(sizes[i]) > max_src)
        results: list[Hypotheses] = [[] for _ in lines]
        for batch in batches:
            out = self.translator.translate_tokens(
                [tokens[i] for i in batch], beam=int(gen.beam), nbest=nbest, length_penalty=lenpen,
                max_len_a=float(gen.max_len_a), max_len_b=int(gen.max_len_b),
            )
            for i, hyps in zip(batch, out):
                results[i] = [(p.decode(toks), float(score) / LN2) for toks, score in list(hyps)[:nbest]]
                stats.generated_tokens += (len(hyps[0][0]) + 1) if hyps else 0
            if bar is not None:
                bar.update(len(batch))
        stats.translated += len(tokens)
        return results


# ------------------------------------------------------------------ the stage
def _progress_bar(cfg: DictConfig, total: int) -> Any:
    """A tqdm bar on standard error, as training draws one (trainer.progress_bar:
    tqdm always, auto only when standard error is a terminal, none never)."""
    mode = cfg.trainer.progress_bar
    if not (mode == "tqdm" or (mode == "auto" and sys.stderr.isatty())):
        return None
    return tqdm(total=total, desc="translate", unit="sent", file=sys.stderr, leave=False, dynamic_ncols=True)


def run(cfg: DictConfig) -> StageResult:
    t, gen = cfg.translate, cfg.generation
    stdout = _claim_stdout() if t.output is None else None
    if not cfg.init_from:
        raise ConfigError(
            "stage=translate needs init_from=<checkpoint .pt> (translate.backend=pet) or an exported model folder "
            "(translate.backend=ctranslate2)"
        )
    source = Path(str(cfg.init_from)).expanduser()
    if t.backend == "pet" and not source.is_file():
        raise ConfigError(f"init_from={cfg.init_from} is not a checkpoint file; translate.backend=pet translates with "
                          "a pet checkpoint (.pt); an exported folder needs translate.backend=ctranslate2")
    if t.backend == "ctranslate2" and not source.is_dir():
        raise ConfigError(f"init_from={cfg.init_from} is not a folder; translate.backend=ctranslate2 translates with "
                          "a model folder exported for CTranslate2")
    if t.nbest > gen.beam:
        raise ConfigError(f"translate.nbest={t.nbest} exceeds generation.beam={gen.beam}: beam search keeps only "
                          f"{gen.beam} hypotheses; raise generation.beam or lower translate.nbest")
    lenpen = float(gen.lenpen if t.lenpen is None else t.lenpen)
    lines = read_input(t.input)
    configure_threads(cfg.trainer.num_threads)
    if t.backend == "pet":
        backend: Any = PetBackend(load_checkpoint(source), str(source), select_device(cfg.trainer.device),
                                  data_root=str(cfg.paths.data_root))
    else:
        backend = CT2Backend(source, int(cfg.trainer.num_threads), str(t.compute_type),
                             select_device(cfg.trainer.device).type)
    with tracked_run(cfg) as tracker:
        stats = TranslateStats(sentences=len(lines))
        bar = _progress_bar(cfg, len(lines))
        start = time.perf_counter()
        try:
            results = backend.translate(lines, gen, lenpen, int(t.nbest), stats, bar)
        finally:
            if bar is not None:
                bar.close()
        stats.seconds = time.perf_counter() - start
        if stats.truncated:
            log.warning("%d source sentence(s) longer than the model's positions were truncated to them",
                        stats.truncated)
        out_lines = format_output(results, int(t.nbest))
        if stdout is not None:
            for line in out_lines:
                stdout.write(line + "\n")
            stdout.flush()
        else:
            out = Path(str(t.output)).expanduser()
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_lines(out, out_lines)
        log.info("translated %d lines (%d non-blank) in %.1fs with beam %d, lenpen %g%s -> %s", stats.sentences,
                 stats.translated, stats.seconds, gen.beam, lenpen, f", {t.nbest}-best" if t.nbest > 1 else "",
                 "standard output" if stdout is not None else t.output)
        seconds = max(stats.seconds, 1e-9)
        result = StageResult(
            stage="translate",
            metric_name="sentences_per_s",
            metric=stats.translated / seconds,
            checkpoint=str(cfg.init_from),
            metrics={
                "sentences": stats.sentences,
                "translated": stats.translated,
                "decode_seconds": stats.seconds,
                "sentences_per_s": stats.translated / seconds,
                "tokens_per_s": stats.generated_tokens / seconds,
                "truncated_sources": stats.truncated,
                "backend": str(t.backend),
                "beam": int(gen.beam),
                "lenpen": lenpen,
                "nbest": int(t.nbest),
                "output": None if stdout is not None else str(t.output),
            },
        )
        return finish_stage(cfg, result, tracker)
