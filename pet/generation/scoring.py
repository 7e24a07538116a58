"""BLEU as the field reports it for IWSLT'14.

* :func:`tokenized_bleu` — fairseq ``--remove-bpe``: BPE joined back, then BLEU
  on the whitespace-tokenized (Moses-tokenized, lowercased by preprocessing)
  text, no further tokenization and no smoothing, which is what fairseq's
  built-in scorer and ``multi-bleu.perl`` compute.
* :func:`detok_sacrebleu` — Moses-detokenize hypotheses and references, then
  sacreBLEU with its default 13a tokenization, reported with its signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from sacrebleu.metrics import BLEU


@dataclass
class BleuScore:
    score: float
    signature: str
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    text: str  # sacreBLEU's one-line summary, e.g. "BLEU = 34.21 68.1/43.0/..."

    def __str__(self) -> str:
        return f"{self.text} [{self.signature}]"


def remove_bpe(line: str, bpe_symbol: Optional[str] = "@@ ") -> str:
    """fairseq's ``post_process`` for subword-nmt: ``(line + " ").replace(sym, "").rstrip()``.

    The added space also removes a continuation marker at the very end."""
    if not bpe_symbol:
        return line
    return (line + " ").replace(bpe_symbol, "").rstrip()


def _score(metric: BLEU, hyps: Sequence[str], refs: Sequence[str]) -> BleuScore:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    result = metric.corpus_score(list(hyps), [list(refs)])
    return BleuScore(
        score=float(result.score),
        signature=str(metric.get_signature()),
        precisions=[float(p) for p in result.precisions],
        bp=float(result.bp),
        sys_len=int(result.sys_len),
        ref_len=int(result.ref_len),
        text=str(result),
    )


def tokenized_bleu(
    hyps: Sequence[str], refs: Sequence[str], bpe_symbol: Optional[str] = "@@ ", lowercase: bool = False
) -> BleuScore:
    """Corpus BLEU on tokenized text after fairseq's ``--remove-bpe``.

    Text is split on whitespace only (``tokenize="none"``) and unsmoothed, as
    fairseq's scorer: a corpus with no matching 4-gram scores 0. ``lowercase``
    is off because the IWSLT'14 recipe lowercases the data before BPE.
    """
    metric = BLEU(tokenize="none", force=True, smooth_method="none", lowercase=lowercase)
    return _score(metric, [remove_bpe(h, bpe_symbol) for h in hyps], [remove_bpe(r, bpe_symbol) for r in refs])


@lru_cache(maxsize=8)
def _detokenizer(lang: str):
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang)


def detokenize(line: str, lang: str) -> str:
    """Moses detokenization; also undoes Moses escaping (``&apos;``, ``&quot;``,
    ``&amp;``, ``&#124;``, ``&lt;``, ``&gt;``, ``&#91;``, ``&#93;``)."""
    return _detokenizer(lang).detokenize(line.split(), return_str=True, unescape=True)


def detok_sacrebleu(
    hyps: Sequence[str],
    refs: Sequence[str],
    lang: str,
    lowercase: Optional[bool] = None,
    bpe_symbol: Optional[str] = "@@ ",
) -> BleuScore:
    """sacreBLEU (13a tokenization) on Moses-detokenized text.

    ``lowercase=None`` turns case-insensitive scoring on when every reference is
    already lowercase (as after the IWSLT'14 recipe); the signature then says
    ``case:lc``, so the number is never mistaken for a cased score.
    """
    hyps = [detokenize(remove_bpe(h, bpe_symbol), lang) for h in hyps]
    refs = [detokenize(remove_bpe(r, bpe_symbol), lang) for r in refs]
    if lowercase is None:
        lowercase = all(r == r.lower() for r in refs)
    return _score(BLEU(lowercase=lowercase), hyps, refs)
