"""translate_dataset: batching, corpus order, BLEU, output files, speed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pet.config.schema import GenerationConfig
from pet.data.batch import Batch
from pet.generation.scoring import detokenize, remove_bpe
from pet.generation.translate import length_sorted_batches, translate_dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_generation_beam_search import CopyModel, tiny_model  # noqa: E402

EOS, PAD = 2, 1


WORDS = ["<s>", "<pad>", "</s>", "<unk>", "the", "c@@", "at", "sat", "on", "mat", "&apos;s", ".", "it",
         "&quot;", "big", "dog", "ran", "a", "home", "was"]


class FakeDictionary:
    """What pet.data.dictionary.Dictionary offers generation: ``string``."""

    def __init__(self, symbols):
        self.symbols = symbols

    def __len__(self):
        return len(self.symbols)

    def string(self, ids, bpe_symbol=None):
        return remove_bpe(" ".join(self.symbols[int(i)] for i in ids), bpe_symbol)


class FakeDataset:
    """LanguagePairDataset's interface: sizes and collate(indices) -> Batch."""

    def __init__(self, src, tgt, tgt_lang="en"):
        self.src, self.tgt, self.tgt_lang = src, tgt, tgt_lang
        self.src_sizes = [len(s) for s in src]
        self.tgt_sizes = [len(t) for t in tgt]

    def __len__(self):
        return len(self.src)

    def collate(self, indices):
        def pad(seqs):
            out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
            for i, s in enumerate(seqs):
                out[i, : len(s)] = torch.tensor(s)
            return out

        tgt = [self.tgt[i] for i in indices]
        return Batch(
            ids=torch.tensor(indices),
            src_tokens=pad([self.src[i] for i in indices]),
            src_lengths=torch.tensor([len(self.src[i]) for i in indices]),
            prev_output_tokens=pad([[EOS] + t[:-1] for t in tgt]),
            target=pad(tgt),
            ntokens=sum(len(t) for t in tgt),
        )


VOCAB = len(WORDS)


def random_corpus(n, seed, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(2, 12, (1,), generator=g))
        out.append(torch.randint(4, vocab, (length,), generator=g).tolist() + [EOS])
    return out


def gen_cfg(**kw):
    return OmegaConf.structured(GenerationConfig(**kw))


def test_length_sorted_batches():
    sizes = [5, 3, 9, 3, 7, 20, 1]
    batches = length_sorted_batches(sizes, range(len(sizes)), max_tokens=15, max_sentences=2)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for b in batches:
        assert len(b) <= 2
        assert len(b) * max(sizes[i] for i in b) <= 15 or len(b) == 1
    assert batches[0] == [6, 1]  # shortest first, ties by index
    assert [5] in batches  # longer than max_tokens: alone
    assert length_sorted_batches(sizes, [0, 2], 0, 0) == [[0, 2]]


def test_copy_model_scores_100_and_writes_fairseq_files(tmp_path):
    corpus = random_corpus(23, seed=0)
    dataset = FakeDataset(corpus, corpus)
    d = FakeDictionary(WORDS)
    out = tmp_path / "gen" / "generate-test.txt"
    raw = [detokenize(d.string(s[:-1], "@@ "), "en") for s in corpus]
    result = translate_dataset(CopyModel(len(WORDS)), dataset, d, d, gen_cfg(max_tokens=40), "cpu", out_path=out,
                               references=raw)
    assert result.n_sentences == 23
    assert result.bleu == pytest.approx(100.0)
    assert result.sacrebleu == pytest.approx(100.0) and result.chrf == pytest.approx(100.0)
    assert "nrefs:1" in result.sacrebleu_signature and "tok:13a" in result.sacrebleu_signature
    assert translate_dataset(CopyModel(len(WORDS)), dataset, d, d, gen_cfg(max_tokens=40), "cpu").sacrebleu is None
    assert result.hyps == result.refs == [d.string(s[:-1], "@@ ") for s in corpus]
    assert result.n_generated_tokens == sum(len(s) for s in corpus)
    assert result.sentences_per_second > 0 and result.tokens_per_second > result.sentences_per_second
    assert "BLEU4 = 100.00" in result.summary()

    lines = out.read_text().splitlines()
    assert len(lines) == 5 * 23
    assert [l.split("\t")[0] for l in lines[:5]] == ["S-0", "T-0", "H-0", "D-0", "P-0"]
    assert [l.split("\t")[0] for l in lines[-5:]] == ["S-22", "T-22", "H-22", "D-22", "P-22"]
    h = lines[2].split("\t")
    assert h[2] == result.hyps[0] and float(h[1]) <= 0
    assert len(lines[4].split("\t")[1].split()) == len(corpus[0])  # one score per token, </s> included
    folder = out.parent
    assert (folder / "hyp.txt").read_text().splitlines() == result.hyps
    assert (folder / "ref.txt").read_text().splitlines() == result.refs
    assert "&apos;" not in (folder / "hyp.detok.txt").read_text()
    assert (folder / "ref.raw.txt").read_text().splitlines() == raw
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_sacrebleu_scores_the_detokenized_lines_once(tmp_path):
    """Moses detokenization is not idempotent ("a &apos; dog" -> "a 'dog" -> "a'dog"):
    sacreBLEU must score hyp.detok.txt as written, as the sacrebleu command would."""
    words = [*WORDS, "&apos;"]
    ids = {w: i for i, w in enumerate(words)}
    corpus = [[ids[w] for w in line.split()] + [EOS] for line in ("a &apos; dog ran home .", "the big dog sat .")]
    d = FakeDictionary(words)
    raw = [detokenize(d.string(s[:-1], "@@ "), "en") for s in corpus]
    assert raw[0] == "a 'dog ran home."
    result = translate_dataset(CopyModel(len(words)), FakeDataset(corpus, corpus), d, d, gen_cfg(max_tokens=40), "cpu",
                               out_path=tmp_path / "generate-test.txt", references=raw)
    assert (tmp_path / "hyp.detok.txt").read_text().splitlines() == raw
    assert result.sacrebleu == pytest.approx(100.0)


def test_order_restored_and_independent_of_batching(tmp_path):
    src = random_corpus(17, seed=1)
    tgt = random_corpus(17, seed=2)
    dataset = FakeDataset(src, tgt)
    d = FakeDictionary(WORDS)
    model = tiny_model(seed=1, vocab=len(WORDS))
    one = translate_dataset(model, dataset, d, d, gen_cfg(beam=3, max_tokens=1000, max_len_b=3), "cpu")
    many = translate_dataset(model, dataset, d, d, gen_cfg(beam=3, max_tokens=30, max_sentences=3, max_len_b=3), "cpu")
    assert one.hyps == many.hyps
    assert one.bleu == pytest.approx(many.bleu)
    assert one.refs == [d.string(t[:-1], "@@ ") for t in tgt]
    # Each hypothesis is that sentence's own translation (corpus order kept).
    from pet.generation.beam_search import BeamSearch

    first = BeamSearch(model, beam=3, max_len_b=3).generate(torch.tensor([src[5]]))[0][0]
    assert one.hyps[5] == d.string(first.output_tokens, "@@ ")

    limited = translate_dataset(model, dataset, d, d, gen_cfg(beam=3, max_examples=4, sacrebleu=False, max_len_b=3), "cpu")
    assert limited.n_sentences == 4 and limited.sacrebleu is None and limited.hyps == one.hyps[:4]
    assert math.isfinite(limited.bleu)


class EscapingDictionary(FakeDictionary):
    def string(self, ids, bpe_symbol=None, escape_unk=False):
        text = " ".join("<<unk>>" if escape_unk and int(i) == 3 else self.symbols[int(i)] for i in ids)
        return remove_bpe(text, bpe_symbol)


def test_unk_in_reference_never_matches():
    """As fairseq: references render <unk> escaped, so a hypothesis <unk> scores nothing."""
    corpus = [[4, 3, 7, 8, 4, 9, 11, EOS], [12, 7, 8, 4, 14, 15, 11, EOS]]
    d = EscapingDictionary(WORDS)
    result = translate_dataset(CopyModel(len(WORDS)), FakeDataset(corpus, corpus), d, d, gen_cfg(), "cpu")
    assert result.refs[0] == "the <<unk>> sat on the mat ." and result.hyps[0] == "the <unk> sat on the mat ."
    assert result.bleu < 100


def test_a_source_longer_than_the_model_is_truncated_not_fatal(caplog):
    corpus = random_corpus(5, seed=3)
    corpus[2] = corpus[2][:-1] * 400 + [EOS]  # thousands of tokens
    model = tiny_model(seed=1, vocab=len(WORDS))
    d = FakeDictionary(WORDS)
    assert len(corpus[2]) > model.spec.max_positions
    with caplog.at_level("WARNING"):
        result = translate_dataset(model, FakeDataset(corpus, corpus), d, d, gen_cfg(beam=2, max_len_b=3), "cpu")
    assert result.n_sentences == 5 and result.n_truncated == 1
    assert "1 source sentence(s) longer than the model" in caplog.text
