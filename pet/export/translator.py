"""Translate with an exported CTranslate2 folder, the way pet decodes.

:class:`CT2Translator` wraps ``ctranslate2.Translator`` with pet's decoding
rules, so that a float32 export reproduces pet's beam search
(:class:`pet.generation.beam_search.BeamSearch`) token for token:

* the output limit is pet's per-sentence ``int(max_len_a * n + max_len_b)``
  (``n`` counts the source's ``</s>``, capped at the model's positions - 1);
  the engine takes one ``max_decoding_length`` per call, so sentences are
  grouped by their limit;
* scores are sums of log-probabilities divided by ``len ** length_penalty``
  where ``len`` counts the final ``</s>`` (the engine's ``return_end_token``;
  the token itself is stripped from the output);
* ``</s>`` cannot end a hypothesis at the first step, ``<unk>`` is allowed,
  sources are not truncated by the engine (pet's own truncation to the
  model's positions is applied instead);
* a sentence is done once it holds ``beam`` finished hypotheses (patience 1;
  a zero length penalty would switch the engine to stopping at the first
  finished best hypothesis, so 0 is passed as a negligible 1e-9).

Two rules the engine applies differently are made pet's by ``pet_ranking``
(the default); both only re-rank hypotheses the engine's search found, and the
search itself is pet's (the same candidates in the same order at every step):

* the engine forbids ``</s>`` at the first step by masking it before the
  softmax (``min_decoding_length=1``), pet after it, so the engine's scores
  of a sentence all carry the same extra -log(1 - p(</s> first)); it is read
  off the engine (a teacher-forced score of the empty target: one encoder
  pass and one decoder step per sentence) and removed;
* pet ends a hypothesis still open at the limit with a forced ``</s>``, whose
  log-probability counts in its score, and keeps the first ``beam``
  hypotheses it finishes; the engine stops at the limit without ``</s>`` and
  keeps the ``beam`` best by a score that leaves that ``</s>`` out. For a
  sentence that reaches the limit, the same search is also read with the
  plain sums as scores (which keeps those that finished early), and the
  hypotheses are scored teacher-forced with the final ``</s>`` and kept and
  ranked as pet does. What the engine does not hand back cannot be ranked:
  a sentence whose pet translation is a hypothesis the engine dropped at the
  limit can still differ; :mod:`pet.export.check` counts how many do.

``pet_ranking=False`` is the engine's own output: no extra work, scores that
include the first-step renormalisation, hypotheses cut at the limit.

pet never generates ``<pad>``; the engine is not told to avoid it (masking it
would renormalise every step), and a model gives it no probability worth the
name once trained.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from pet.analysis.latency import LatencyResult, load_average
from pet.export.ctranslate2 import LAYOUT_FILE, ExportError, require_ctranslate2

EOS = "</s>"
SPECIALS = ("<s>", "<blank>", "<pad>", "</s>", "<unk>")
Hypotheses = list[list[tuple[list[str], float]]]


def read_vocabulary(folder: str | Path, side: str) -> list[str]:
    """The engine's vocabulary for ``side`` (source | target), one token a line."""
    folder = Path(folder)
    for name in (f"{side}_vocabulary.txt", "shared_vocabulary.txt", f"{side}_vocabulary.json", "shared_vocabulary.json"):
        path = folder / name
        if path.is_file():
            if path.suffix == ".json":
                return json.loads(path.read_text(encoding="utf-8"))
            return path.read_text(encoding="utf-8").splitlines()
    raise ExportError(f"{folder} holds no {side} vocabulary; is it a CTranslate2 model folder?")


class CT2Translator:
    """An exported model, ready to translate token sequences.

    ``threads``: intra-op threads (0 = the engine's default, which can be far
    more than the cores a shared machine has free); ``compute_type``:
    ``default`` runs the weights as stored (an int8 export with int8 matrix
    products, which quantize activations too), or any type the engine
    accepts: ``float32`` on an int8 export keeps the small file but computes
    in float32 (only the stored weights' rounding remains, and no int8
    speed-up). Decoding defaults (beam, length limit, length penalty) are the
    ones stored at export time, else fairseq's IWSLT settings.
    """

    def __init__(self, folder: str | Path, threads: int = 0, compute_type: str = "default", device: str = "cpu"):
        ctranslate2 = require_ctranslate2()
        self.folder = Path(folder)
        if not (self.folder / "model.bin").is_file():
            raise ExportError(f"{self.folder} is not a CTranslate2 model folder (no model.bin); export a model first")
        layout_path = self.folder / LAYOUT_FILE
        self.layout: dict[str, Any] = json.loads(layout_path.read_text()) if layout_path.is_file() else {}
        self.max_positions: Optional[int] = self.layout.get("max_positions")
        decoding = self.layout.get("decoding", {})
        self.beam = int(decoding.get("beam", 5))
        self.max_len_a = float(decoding.get("max_len_a", 1.2))
        self.max_len_b = int(decoding.get("max_len_b", 10))
        self.length_penalty = float(decoding.get("lenpen", 1.0))
        self.threads = threads
        self.compute_type = compute_type
        self.device = device
        try:
            self.translator = ctranslate2.Translator(
                str(self.folder), device=device, compute_type=compute_type, intra_threads=threads, inter_threads=1
            )
        except (RuntimeError, ValueError) as e:
            raise ExportError(f"CTranslate2 cannot load {self.folder}: {e}") from e

    # ------------------------------------------------------------ decoding

    def source_tokens(self, tokens: Sequence[str]) -> list[str]:
        """``tokens`` as pet feeds them: without a trailing ``</s>`` (the engine
        appends one) and cut to the model's positions, as pet truncates."""
        tokens = list(tokens)
        if tokens and tokens[-1] == EOS:
            tokens = tokens[:-1]
        if self.max_positions and len(tokens) > self.max_positions - 1:
            tokens = tokens[: self.max_positions - 1]
        return tokens

    def max_length(self, n_source_tokens: int, max_len_a: float, max_len_b: int) -> int:
        """pet's output limit (tokens before ``</s>``) for a source of that many tokens (``</s>`` not counted)."""
        limit = int(max_len_a * (n_source_tokens + 1) + max_len_b)
        if self.max_positions:
            limit = min(limit, self.max_positions - 1)
        return max(limit, 1)

    def translate_tokens(
        self,
        batch: Sequence[Sequence[str]],
        beam: Optional[int] = None,
        nbest: int = 1,
        length_penalty: Optional[float] = None,
        max_len_a: Optional[float] = None,
        max_len_b: Optional[int] = None,
        max_batch_size: int = 0,
        pet_ranking: bool = True,
    ) -> Hypotheses:
        """Per sentence, the ``nbest`` best ``(tokens, score)`` pairs, best first.

        Tokens are subwords without ``</s>``; a score is the length-normalised
        log-probability (natural log). Unset options take the export's
        defaults. ``pet_ranking``: score and rank as pet does (module doc).
        """
        beam = self.beam if beam is None else beam
        lenpen = self.length_penalty if length_penalty is None else length_penalty
        a = self.max_len_a if max_len_a is None else max_len_a
        b = self.max_len_b if max_len_b is None else max_len_b
        if not 1 <= nbest <= beam:
            raise ValueError(f"nbest must be between 1 and the beam ({beam}), got {nbest}")
        sources = [self.source_tokens(s) for s in batch]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(sources):
            if s:  # the engine answers an empty source with no hypothesis at all
                groups[self.max_length(len(s), a, b)].append(i)
        engine_lenpen = lenpen if lenpen != 0 else 1e-9
        options = dict(
            max_batch_size=max_batch_size, beam_size=beam, patience=1, num_hypotheses=beam if pet_ranking else nbest,
            return_end_token=True, return_scores=True, disable_unk=False, max_input_length=0, min_decoding_length=1,
        )
        out: Hypotheses = [[] if s else [([], 0.0)] for s in sources]  # nothing to translate: an empty translation
        for limit, idx in sorted(groups.items()):
            results = self.translator.translate_batch(
                [sources[i] for i in idx], max_decoding_length=limit, length_penalty=engine_lenpen, **options
            )
            if not pet_ranking:
                for i, r in zip(idx, results):
                    out[i] = [(_strip_eos(h), float(sc)) for h, sc in zip(r.hypotheses, r.scores)]
                continue
            at_limit = [i for i, r in zip(idx, results) if any(h[-1] != EOS for h in r.hypotheses)]
            first_eos = self.score_tokens([sources[i] for i in idx], [[] for _ in idx])
            for i, r, lp in zip(idx, results, first_eos):
                # log(1 - p(</s> first)): what the engine's masking added to every sum
                shift = math.log1p(-math.exp(lp[0])) if lp[0] < 0 else -math.inf
                hyps = []
                for h, sc in zip(r.hypotheses, r.scores):
                    n = len(h)
                    hyps.append((_strip_eos(h), (sc * n**engine_lenpen + shift) / n**lenpen))
                out[i] = sorted(hyps, key=lambda x: -x[1])  # stable: ties keep the engine's order
            if at_limit:
                more = self.translator.translate_batch(
                    [sources[i] for i in at_limit], max_decoding_length=limit, length_penalty=1e-9, **options
                )
                first = dict(zip(idx, results))
                for i, r1 in zip(at_limit, more):
                    found = [list(h) for h in first[i].hypotheses]
                    found += [list(h) for h in r1.hypotheses if list(h) not in found]
                    out[i] = self._rank_like_pet(sources[i], found, limit, beam, lenpen)
        return [hyps[:nbest] for hyps in out]

    def _rank_like_pet(
        self, source: list[str], hyps: list[list[str]], limit: int, beam: int, lenpen: float
    ) -> list[tuple[list[str], float]]:
        """``hyps`` (ending with ``</s>``, or open at ``limit``) as pet's beam search keeps and ranks them.

        Every hypothesis is scored teacher-forced with a final ``</s>``. pet
        keeps the first ``beam`` it finishes: those that ended before the
        last step, then those ending with ``</s>`` at the last step the model
        chooses (in the order of their sums), then, while there is room, the
        hypotheses still open at the limit, completed with ``</s>`` (in the
        order of their completed sums).
        """
        log_probs = self.score_tokens([source] * len(hyps), hyps)
        early, at_last, open_ = [], [], []
        for h, lp in zip(hyps, log_probs):
            entry = (_strip_eos(h), sum(lp) / len(lp) ** lenpen)
            if h[-1] != EOS:
                open_.append((sum(lp), entry))
            elif len(lp) < limit:
                early.append(entry)
            else:
                at_last.append((sum(lp), entry))
        kept = early[:beam]
        for group in (at_last, open_):
            for _, entry in sorted(group, key=lambda x: -x[0]):
                if len(kept) < beam:
                    kept.append(entry)
        return sorted(kept, key=lambda h: -h[1])  # stable: ties keep pet's finishing order

    def score_tokens(self, sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]]) -> list[list[float]]:
        """Teacher-forced log-probability of each target token and of the final ``</s>``."""
        results = self.translator.score_batch(
            [self.source_tokens(s) for s in sources], [_strip_eos(t) for t in targets], max_input_length=0
        )
        return [list(r.log_probs) for r in results]


def _strip_eos(tokens: Sequence[str]) -> list[str]:
    tokens = list(tokens)
    return tokens[:-1] if tokens and tokens[-1] == EOS else tokens


def measure_ct2_latency(
    translator: CT2Translator,
    batch_size: int,
    length: int = 25,
    beam: int = 5,
    num_sentences: Optional[int] = None,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
):
    """Sentences per second at ``batch_size``, every sentence decoded for exactly ``length`` steps.

    The same work as pet's fixed-length measurement
    (:func:`pet.analysis.latency.measure_latency`): synthetic sources of
    ``length`` tokens (``</s>`` included), ``beam``, and ``length`` decoder
    steps per hypothesis (``min_decoding_length = max_decoding_length``).
    Returns a :class:`pet.analysis.latency.LatencyResult` (median of
    ``repeats`` timed passes after ``warmup`` untimed ones).
    """
    if batch_size < 1 or length < 1 or repeats < 1:
        raise ValueError("batch_size, length and repeats must be >= 1")
    n = num_sentences or (8 if batch_size == 1 else batch_size)
    vocab = [t for t in read_vocabulary(translator.folder, "source") if t not in SPECIALS and not t.startswith("madeupword")]
    rng = random.Random(seed)
    sentences = [[rng.choice(vocab) for _ in range(max(length - 1, 1))] for _ in range(n)]
    batches = [sentences[i : i + batch_size] for i in range(0, n, batch_size)]
    options = dict(
        beam_size=beam, patience=1, num_hypotheses=1, max_input_length=0,
        min_decoding_length=length, max_decoding_length=length,
    )
    load = load_average()
    for _ in range(warmup):
        for b in batches:
            translator.translator.translate_batch(b, **options)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            translator.translator.translate_batch(b, **options)
        times.append(time.perf_counter() - start)
    return LatencyResult(
        batch_size=min(batch_size, n),
        beam=beam,
        num_sentences=n,
        num_batches=len(batches),
        threads=translator.threads,  # 0: the engine's default
        fixed_length=length,
        warmup=warmup,
        repeats=repeats,
        times_s=times,
        device=f"{translator.device} (ctranslate2 {translator.translator.compute_type})",
        load_average=load,
    )


__all__ = ["CT2Translator", "measure_ct2_latency", "read_vocabulary"]
