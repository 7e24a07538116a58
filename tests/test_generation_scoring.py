"""BLEU helpers: fairseq --remove-bpe tokenized BLEU and detokenized sacreBLEU."""

from __future__ import annotations

import pytest
import sacrebleu

from pet.generation.scoring import detokenize, remove_bpe, sacrebleu_scores, tokenized_bleu

HYPS = [
    "the cat sat on the mat .",
    "there is a dog in the garden , and it barks .",
    "we went to the market yesterday .",
    "i do n&apos;t know what to say .",
]
REFS = [
    "the cat sat on a mat .",
    "a dog is in the garden and it is barking .",
    "yesterday we went to the market .",
    "i don &apos;t know what i should say .",
]


def test_remove_bpe_follows_fairseq():
    assert remove_bpe("the c@@ at sat") == "the cat sat"
    assert remove_bpe("un@@ believ@@ able") == "unbelievable"
    assert remove_bpe("trailing marker@@") == "trailing marker"  # (s + " ").replace(...).rstrip()
    assert remove_bpe("a@@ b", None) == "a@@ b"


def test_perfect_match_is_100():
    assert tokenized_bleu(REFS, REFS).score == pytest.approx(100.0)
    raw = [detokenize(r, "en") for r in REFS]
    assert [x.score for x in sacrebleu_scores(REFS, raw, "en", lowercase=True)] == pytest.approx([100.0, 100.0])


def test_tokenized_bleu_hand_computed():
    # p1..p4 = 5/6, 3/5, 2/4, 1/3, equal lengths: BLEU = (1/12) ** (1/4)
    result = tokenized_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert result.score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-9)
    assert result.bp == pytest.approx(1.0)
    assert (result.sys_len, result.ref_len) == (6, 6)


def test_tokenized_bleu_matches_sacrebleu_on_tokenized_text():
    direct = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", smooth_method="none", force=True)
    ours = tokenized_bleu(HYPS, REFS)
    assert ours.score == pytest.approx(direct.score, abs=1e-9)
    assert "tok:none" in ours.signature and "nrefs:1" in ours.signature


def test_tokenized_bleu_removes_bpe_and_is_unsmoothed():
    bpe_hyps = ["the c@@ at sat on the m@@ at ."]
    assert tokenized_bleu(bpe_hyps, ["the cat sat on the mat ."]).score == pytest.approx(100.0)
    assert tokenized_bleu(bpe_hyps, ["the cat sat on the mat ."], bpe_symbol=None).score < 100
    # No 4-gram at all: fairseq's scorer (and multi-bleu) give 0, not a smoothed value.
    assert tokenized_bleu(["a b c"], ["a b c"]).score == 0.0


def test_detokenize_undoes_moses_escapes():
    assert detokenize("it &apos;s a &quot; test &quot; .", "en") == 'it\'s a "test".'
    assert detokenize("a &#124; b &amp; c &lt; d &gt; &#91; x &#93;", "en") == "a | b & c < d > [x]"


def test_sacrebleu_scores_detokenized_hypotheses_against_raw_references():
    raw = ["The cat sat on a mat.", "A dog is in the garden and it is barking.",
           "Yesterday we went to the market.", "I don't know what I should say."]
    bleu, chrf = sacrebleu_scores(HYPS, raw, "en", lowercase=True)
    detok_h = [detokenize(h, "en") for h in HYPS]
    assert bleu.score == pytest.approx(sacrebleu.corpus_bleu(detok_h, [raw], lowercase=True).score, abs=1e-9)
    direct_chrf = sacrebleu.metrics.CHRF(lowercase=True).corpus_score(detok_h, [raw])
    assert chrf.score == pytest.approx(direct_chrf.score, abs=1e-9)
    assert 0 < bleu.score < 100 and 0 < chrf.score < 100
    for part in ("nrefs:1", "tok:13a", "case:lc", "smooth:exp", f"version:{sacrebleu.__version__}"):
        assert part in bleu.signature
    assert "case:lc" in chrf.signature
    cased, _ = sacrebleu_scores(HYPS, raw, "en", lowercase=False)
    assert cased.score < bleu.score and "case:mixed" in cased.signature


def test_typographic_apostrophe_is_reattached():
    assert detokenize("I don ’ t know , it ’ s Sony ’ s money . The dogs ’ bowls .", "en") == \
        "I don’t know, it’s Sony’s money. The dogs’ bowls."
    assert detokenize("Gibt ’ s das ?", "de") == "Gibt’s das?"


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        tokenized_bleu(["a", "b"], ["a"])
