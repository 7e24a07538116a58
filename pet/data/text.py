"""Moses-style text processing: tokenization, lowercasing, cleaning, detokenization.

fairseq's IWSLT'14 recipe runs Moses' ``tokenizer.perl -l LANG`` (XML escaping
on, no aggressive hyphen splitting), ``clean-corpus-n.perl -ratio 1.5 ... 1 175``
and ``lowercase.perl``. This module reproduces those three scripts in Python
with sacremoses, so the BLEU that pet reports is computed on the same token
sequences as the published numbers.

sacremoses 0.1/0.2 lacks one rule of the current ``tokenizer.perl``: the last
word of a line always gets its final period split off ("... u.s.a." ->
"u.s.a .", "... in 1984." -> "1984 ."), even when the word is a non-breaking
prefix or contains another period. :class:`FaithfulMosesTokenizer` adds that
rule; with it, the raw IWSLT'14 dev/test XML tokenizes to exactly the lines of
fairseq's ``test.de`` / ``test.en`` (6,750 of 6,750 per language, against
6,734 / 6,735 with stock sacremoses); ``tests/test_data_text.py`` measures it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from sacremoses import MosesDetokenizer, MosesTokenizer

from pet.data.dictionary import remove_bpe

__all__ = [
    "FaithfulMosesTokenizer",
    "MosesPipeline",
    "clean_pairs",
    "lowercase",
    "remove_bpe",
]

_ENDS_WITH_PERIOD = re.compile(r"^(\S+)\.$")
_NUMERIC_START = re.compile(r"^[0-9]+")


class FaithfulMosesTokenizer(MosesTokenizer):
    """sacremoses' tokenizer plus tokenizer.perl's "split the last word's period" rule."""

    def handles_nonbreaking_prefixes(self, text: str) -> str:  # noqa: D102 - see class doc
        tokens = text.split()
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            match = _ENDS_WITH_PERIOD.search(token)
            if not match:
                continue
            prefix = match.group(1)
            if i == last:
                # tokenizer.perl: "split last words independently as they are
                # unlikely to be non-breaking prefixes"
                tokens[i] = prefix + " ."
            elif (
                ("." in prefix and self.isanyalpha(prefix))
                or (prefix in self.NONBREAKING_PREFIXES and prefix not in self.NUMERIC_ONLY_PREFIXES)
                or (tokens[i + 1] and self.islower(tokens[i + 1][0]))
            ):
                pass
            elif prefix in self.NUMERIC_ONLY_PREFIXES and _NUMERIC_START.search(tokens[i + 1]):
                pass
            else:
                tokens[i] = prefix + " ."
        return " ".join(tokens)


@functools.cache
def _tokenizer(lang: str, faithful: bool) -> MosesTokenizer:
    # Building a tokenizer loads the non-breaking-prefix lists and compiles a
    # few dozen regexes; one per language is plenty.
    return FaithfulMosesTokenizer(lang=lang) if faithful else MosesTokenizer(lang=lang)


@functools.cache
def _detokenizer(lang: str) -> MosesDetokenizer:
    return MosesDetokenizer(lang=lang)


def lowercase(line: str) -> str:
    """``lowercase.perl`` (Perl's ``lc`` on UTF-8 text; Python's full case mapping)."""
    return line.lower()


class MosesPipeline:
    """Tokenize (then optionally lowercase) and detokenize one language's text.

    ``escape=True`` writes Moses XML entities (``&apos;`` ``&quot;`` ``&amp;``
    ``&lt;`` ``&gt;`` ``&#91;`` ``&#93;`` ``&#124;``) as tokenizer.perl does
    without ``-no-escape``. ``faithful=False`` gives stock sacremoses behaviour.
    """

    def __init__(self, lang: str, *, escape: bool = True, lowercase: bool = False, faithful: bool = True) -> None:
        self.lang = lang
        self.escape = escape
        self.lowercase = lowercase
        self._tok = _tokenizer(lang, faithful)

    def tokenize(self, line: str) -> str:
        """One raw line -> space-separated Moses tokens (lowercased if configured)."""
        out = self._tok.tokenize(line, escape=self.escape, return_str=True, aggressive_dash_splits=False)
        return lowercase(out) if self.lowercase else out

    def tokenize_lines(self, lines: Sequence[str]) -> list[str]:
        return [self.tokenize(line) for line in lines]

    def detokenize(self, line: str) -> str:
        """Moses tokens -> readable text (entities unescaped), for sacreBLEU."""
        return _detokenizer(self.lang).detokenize(line.split(), return_str=True, unescape=True)

    @staticmethod
    def remove_bpe(line: str, bpe_symbol: str = "@@ ") -> str:
        return remove_bpe(line, bpe_symbol)


_WS = re.compile(r"\s+")


def _normalize_for_clean(line: str, strip_bars: bool) -> str:
    if strip_bars:
        line = line.replace("|", "")
    return _WS.sub(" ", line).strip(" ")


def clean_pairs(
    src: Sequence[str],
    tgt: Sequence[str],
    *,
    min_len: int = 1,
    max_len: int = 175,
    ratio: float = 1.5,
) -> tuple[list[int], list[str], list[str]]:
    """Moses ``clean-corpus-n.perl -ratio RATIO corpus src tgt out MIN MAX``.

    Returns the kept indices and the kept, whitespace-normalised lines. As in
    the Perl script, literal ``|`` characters are deleted (they are factor
    separators in Moses) unless the first pair already contains one ("factored"
    corpus); with Moses escaping on, no ``|`` survives tokenization anyway.
    A pair is dropped when either side is empty, has fewer than ``min_len`` or
    more than ``max_len`` space-separated tokens, or when either side is more
    than ``ratio`` times longer than the other.
    """
    if len(src) != len(tgt):
        raise ValueError(f"clean_pairs: {len(src)} source lines but {len(tgt)} target lines")
    factored = bool(src) and ("|" in src[0] or "|" in tgt[0])
    keep: list[int] = []
    out_src: list[str] = []
    out_tgt: list[str] = []
    for i, (s, t) in enumerate(zip(src, tgt)):
        s = _normalize_for_clean(s, not factored)
        t = _normalize_for_clean(t, not factored)
        if not s or not t:
            continue
        ns = len(s.split(" "))
        nt = len(t.split(" "))
        if ns > max_len or nt > max_len or ns < min_len or nt < min_len:
            continue
        if ns / nt > ratio or nt / ns > ratio:
            continue
        keep.append(i)
        out_src.append(s)
        out_tgt.append(t)
    return keep, out_src, out_tgt
