"""BLEU as the field reports it for IWSLT'14, and standard sacreBLEU/chrF.

* :func:`tokenized_bleu` — fairseq ``--remove-bpe``: BPE joined back, then BLEU
  on the whitespace-tokenized (Moses-tokenized, lowercased by preprocessing)
  text, no further tokenization and no smoothing, which is what fairseq's
  built-in scorer and ``multi-bleu.perl`` compute.
* :func:`sacrebleu_scores` — standard sacreBLEU and chrF: Moses-detokenized
  hypotheses against the raw, untouched reference lines (never references
  rebuilt from the tokenized, BPE'd text, whose ``<unk>`` and lost
  characters would flatter or punish a system), 13a tokenization, reported
  with their signatures. ``sacrebleu <raw refs> -i hyp.detok.txt [-lc]``
  gives the same numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesDetokenizer


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
    if isinstance(metric, CHRF):
        return BleuScore(score=float(result.score), signature=str(metric.get_signature()), precisions=[], bp=1.0,
                         sys_len=0, ref_len=0, text=str(result))
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
    return MosesDetokenizer(lang=lang)


# Moses splits the typographic apostrophe off both sides ("don ’ t", "Sony ’ s")
# and its detokenizer leaves it so: re-attach it to the word before, and to a
# clitic after (t, s, re, ve, ll, d, m: English and German contractions).
_CLOSING_APOSTROPHE = re.compile(r"(?<=\w) ’")
_CLITIC = re.compile(r"’ (?=(?:t|s|re|ve|ll|d|m|n|em)\b)", re.IGNORECASE)


def detokenize(line: str, lang: str) -> str:
    """Moses detokenization; also undoes Moses escaping (``&apos;``, ``&quot;``,
    ``&amp;``, ``&#124;``, ``&lt;``, ``&gt;``, ``&#91;``, ``&#93;``) and re-attaches
    the typographic apostrophe ’ as the tokenizer split it."""
    text = _detokenizer(lang).detokenize(line.split(), return_str=True, unescape=True)
    return _CLITIC.sub("’", _CLOSING_APOSTROPHE.sub("’", text))


def sacrebleu_scores(
    hyps: Sequence[str], references: Sequence[str], lang: str, lowercase: bool, bpe_symbol: Optional[str] = "@@ "
) -> tuple[BleuScore, BleuScore]:
    """(sacreBLEU, chrF) of BPE'd, tokenized hypotheses, detokenized, against the
    raw reference lines as they are. ``lowercase`` scores case-insensitively
    (the signature says ``case:lc``): right when the model was trained on
    lowercased text, which could never match a cased reference."""
    detok = [detokenize(remove_bpe(h, bpe_symbol), lang) for h in hyps]
    return detokenized_scores(detok, references, lowercase)


def detokenized_scores(detok: Sequence[str], references: Sequence[str], lowercase: bool) -> tuple[BleuScore, BleuScore]:
    """(sacreBLEU, chrF) of hypotheses already detokenized (as the sacrebleu
    command scores a file of them; detokenizing again is not idempotent)."""
    return _score(BLEU(lowercase=lowercase), detok, references), _score(CHRF(lowercase=lowercase), detok, references)
