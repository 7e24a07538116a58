"""Is the exported model the model? Beam outputs and log-probs, pet vs the engine.

:func:`compare_with_pet` beam-searches the same source sentences with pet's
:class:`~pet.generation.beam_search.BeamSearch` and with a
:class:`~pet.export.translator.CT2Translator` under the same settings, and
reports

* the share of sentences whose best hypotheses are identical, token for token;
* the largest difference between the two engines' scores (length-normalised
  log-probabilities) of the identical best hypotheses;
* the largest difference between teacher-forced log-probabilities of pet's
  hypotheses (every token and the final ``</s>``) in the two engines: the
  direct measure of whether the exported weights compute what pet's do.

:func:`check_exactness` raises :class:`~pet.export.ctranslate2.ExportError`
when the share is below a threshold (default 0.99).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pet.export.ctranslate2 import ExportError, ct2_vocabulary
from pet.export.translator import CT2Translator
from pet.generation.beam_search import BeamSearch

PAD, EOS = 1, 2


@dataclass
class ExactnessReport:
    sentences: int
    identical: int
    compute_type: str
    # Sentences whose pet translation ran to the length limit (</s> forced).
    length_limited: int = 0
    max_score_difference: float = 0.0
    max_logprob_difference: float = 0.0
    # The first few sentences that differ: index, pet's and the engine's tokens.
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share_identical(self) -> float:
        return self.identical / self.sentences if self.sentences else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share_identical": self.share_identical}

    def summary(self) -> str:
        return (
            f"{self.identical}/{self.sentences} identical ({100 * self.share_identical:.2f} %, {self.compute_type}), "
            f"max score difference {self.max_score_difference:.2e}, "
            f"max teacher-forced log-prob difference {self.max_logprob_difference:.2e}"
        )


def _pad_batch(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def _pet_sources(sources: Sequence[Sequence[int]], max_positions: int) -> list[list[int]]:
    """Each source ending with one </s>, cut to the model's positions as pet's translate does."""
    out = []
    for s in sources:
        s = [int(t) for t in s if int(t) != PAD]
        if s and s[-1] == EOS:
            s = s[:-1]
        out.append(s[: max_positions - 1] + [EOS])
    return out


@torch.inference_mode()
def teacher_forced(model: torch.nn.Module, sources: list[list[int]], targets: list[list[int]], batch_size: int) -> list[list[float]]:
    """pet's log-probability of each target token (targets end with </s>), in eval mode."""
    out: list[list[float]] = []
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    for i in range(0, len(sources), batch_size):
        src, tgt = sources[i : i + batch_size], targets[i : i + batch_size]
        prev = _pad_batch([[EOS] + t[:-1] for t in tgt]).to(device)
        logits, _, _ = model(_pad_batch(src).to(device), prev)
        lp = F.log_softmax(logits.float(), dim=-1).gather(-1, _pad_batch(tgt).to(device).unsqueeze(-1)).squeeze(-1).cpu()
        out.extend(lp[j, : len(t)].tolist() for j, t in enumerate(tgt))
    model.train(was_training)
    return out


def compare_with_pet(
    model: torch.nn.Module,
    translator: CT2Translator,
    sources: Sequence[Sequence[int]],
    src_symbols: Sequence[str],
    tgt_symbols: Sequence[str],
    beam: int = 5,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    lenpen: float = 1.0,
    batch_size: int = 64,
    keep_differences: int = 5,
) -> ExactnessReport:
    """pet's beam search vs the engine's on ``sources`` (id sequences, </s> optional)."""
    device = next(model.parameters()).device
    srcs = _pet_sources(sources, model.spec.max_positions)
    src_vocab, tgt_vocab = ct2_vocabulary(src_symbols), ct2_vocabulary(tgt_symbols)
    search = BeamSearch(model, beam=beam, max_len_a=max_len_a, max_len_b=max_len_b, lenpen=lenpen)
    limits = search.max_lengths([len(s) for s in srcs])
    order = sorted(range(len(srcs)), key=lambda i: (len(srcs[i]), i))
    pet_best: dict[int, Any] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        for i, hyps in zip(idx, search.generate(_pad_batch([srcs[i] for i in idx]).to(device))):
            pet_best[i] = hyps[0]

    src_tokens = [[src_vocab[t] for t in s[:-1]] for s in srcs]
    ct2 = translator.translate_tokens(
        src_tokens, beam=beam, nbest=1, length_penalty=lenpen, max_len_a=max_len_a, max_len_b=max_len_b
    )
    report = ExactnessReport(sentences=len(srcs), identical=0, compute_type=translator.translator.compute_type)
    pet_hyps = []
    for i in range(len(srcs)):
        hyp = pet_best[i]
        pet_tokens = [tgt_vocab[t] for t in hyp.output_tokens.tolist()]
        pet_hyps.append(hyp.tokens.tolist())
        ct2_tokens, ct2_score = ct2[i][0]
        report.length_limited += int(len(pet_tokens) >= limits[i])
        if ct2_tokens == pet_tokens:
            report.identical += 1
            report.max_score_difference = max(report.max_score_difference, abs(hyp.score - ct2_score))
        elif len(report.differences) < keep_differences:
            report.differences.append({"index": i, "pet": " ".join(pet_tokens), "ctranslate2": " ".join(ct2_tokens),
                                       "pet_score": hyp.score, "ctranslate2_score": ct2_score})

    pet_lp = teacher_forced(model, srcs, pet_hyps, batch_size)
    ct2_lp = translator.score_tokens(src_tokens, [[tgt_vocab[t] for t in h[:-1]] for h in pet_hyps])
    for a, b in zip(pet_lp, ct2_lp):
        if len(a) != len(b):
            raise ExportError(f"the engine scored {len(b)} target positions where pet has {len(a)}")
        for x, y in zip(a, b):
            d = abs(x - y) if math.isfinite(x) and math.isfinite(y) else (0.0 if x == y else math.inf)
            report.max_logprob_difference = max(report.max_logprob_difference, d)
    return report


def check_exactness(
    model: torch.nn.Module,
    translator: CT2Translator,
    sources: Sequence[Sequence[int]],
    src_symbols: Sequence[str],
    tgt_symbols: Sequence[str],
    min_share: float = 0.99,
    score_tolerance: float = 1e-3,
    **decoding: Any,
) -> ExactnessReport:
    """:func:`compare_with_pet`, failing with :class:`ExportError` below
    ``min_share`` identical outputs, or when an identical output's score differs
    by more than ``score_tolerance`` (same tokens, other numbers: a wrong scale)."""
    report = compare_with_pet(model, translator, sources, src_symbols, tgt_symbols, **decoding)
    if report.max_score_difference > score_tolerance:
        raise ExportError(
            f"the CTranslate2 export gives pet's translations other scores: {report.summary()}, above the "
            f"tolerance {score_tolerance:g}; the conversion is wrong (please report it)"
        )
    if report.share_identical < min_share:
        first = report.differences[0] if report.differences else {}
        raise ExportError(
            f"the CTranslate2 export does not reproduce pet's translations: {report.summary()}, "
            f"below the required {100 * min_share:.2f} %; first difference (sentence {first.get('index')}): "
            f"pet {first.get('pet')!r} vs ctranslate2 {first.get('ctranslate2')!r}. "
            "A teacher-forced log-prob difference far above 1e-4 means the conversion is wrong (please report it); "
            "otherwise the engines' decoding rules differ on these sentences (e.g. at the length limit)"
        )
    return report
