"""Beam search: incremental, batched, shrinking search == a slow reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pet.config.schema import ModelConfig
from pet.generation.beam_search import BeamSearch, strip_eos
from pet.models.spec import spec_from_config
from pet.models.transformer import EncoderOut, TransformerModel

EOS, PAD, UNK = 2, 1, 3
VOCAB = 24




def tiny_model(seed: int = 0, vocab: int = VOCAB, max_positions: int = 64, pet_shape: bool = False, **kw) -> TransformerModel:
    cfg = dict(
        name="tiny",
        encoder_embed_dim=32,
        decoder_embed_dim=32,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        encoder_layers=2,
        decoder_layers=2,
        encoder_heads=4,
        decoder_heads=4,
        dropout=0.1,
        max_positions=max_positions,
    )
    if pet_shape:  # PET: physical layers used twice, permuted roles, shared query
        cfg.update(
            encoder_layer_order=[0, 1, 0, 1],
            decoder_layer_order=[0, 1, 0, 1],
            encoder_attention_roles=["qkv", "qkv", "kqv", "vkq"],
            decoder_share_query=True,
        )
    cfg.update(kw)
    torch.manual_seed(seed)
    model = TransformerModel(spec_from_config(OmegaConf.structured(ModelConfig(**cfg)), vocab, vocab))
    return model.eval()


def bias_logits(model: TransformerModel, bias: torch.Tensor, eos_table: torch.Tensor | None = None):
    """Add a fixed bias to the decoder's logits, plus (optionally) an </s> bias
    that depends on the position and the input token there, so that hypotheses
    and sentences finish at many different steps. Works the same for a full
    forward and an incremental (last position only) one."""

    def hook(_module, args, output):
        logits, states = output
        logits = logits + bias
        if eos_table is not None:
            prev = args[0]
            t = logits.size(1)
            positions = torch.arange(prev.size(1) - t, prev.size(1))
            extra = eos_table[positions.unsqueeze(0), prev[:, -t:]]
            logits = logits.clone()
            logits[..., EOS] += extra
        return logits, states

    return model.decoder.register_forward_hook(hook)


def eos_table(seed: int, offset: float, scale: float = 3.0, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, vocab, generator=g) * scale + offset


def random_sources(lengths: list[int], seed: int, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    src = torch.full((len(lengths), width), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[i, n - 1] = EOS
    return src


def reference_beam_search(model, src_row, beam, max_len_a, max_len_b, lenpen, min_len=1):
    """fairseq's beam search for one sentence, written plainly: full decoder
    forward over the whole prefix at every step, no cache, no batching."""
    src = src_row[src_row.ne(PAD)].unsqueeze(0)
    max_len = min(int(max_len_a * src.size(1) + max_len_b), model.spec.max_positions - 1)
    enc = model.encoder(src)
    live = [([EOS], 0.0, [])]  # (prefix, cumulative log-prob, per-token log-probs)
    finished = []
    for step in range(max_len + 1):
        prev = torch.tensor([p for p, _, _ in live])
        logits, _ = model.decoder(prev, enc.index_select(torch.zeros(len(live), dtype=torch.long)))
        lp = F.log_softmax(logits[:, -1].float(), dim=-1)
        vocab = lp.size(1)
        lp[:, PAD] = -math.inf
        if step >= max_len:
            keep = lp[:, EOS].clone()
            lp[:] = -math.inf
            lp[:, EOS] = keep
        elif step < min_len:
            lp[:, EOS] = -math.inf
        total = lp + torch.tensor([c for _, c, _ in live]).unsqueeze(1)
        flat = total.view(-1)
        values, indices = flat.topk(min(2 * beam, flat.numel() - 1))
        next_live = []
        for rank, (v, i) in enumerate(zip(values.tolist(), indices.tolist())):
            h, tok = divmod(i, vocab)
            prefix, cum, pos = live[h]
            if tok == EOS:  # </s> candidates never continue
                if rank < beam and v != -math.inf and len(finished) < beam:
                    finished.append((prefix[1:] + [EOS], v / (step + 1) ** lenpen, pos + [v - cum]))
            elif len(next_live) < beam:
                next_live.append((prefix + [tok], v, pos + [v - cum]))
        if len(finished) >= beam or step == max_len:
            break
        live = next_live
    return sorted(finished, key=lambda h: -h[1]), max_len


def teacher_forced_logprobs(model, src_row, tokens):
    src = src_row[src_row.ne(PAD)].unsqueeze(0)
    prev = torch.cat([torch.tensor([EOS]), tokens[:-1]]).unsqueeze(0)
    logits, _, _ = model(src, prev)
    lp = F.log_softmax(logits.float(), dim=-1)[0]
    return lp.gather(1, tokens.unsqueeze(1)).squeeze(1)


CASES = [
    # (beam, lenpen, pet_shape, eos_offset)
    (1, 1.0, False, -3.0),
    (1, 1.0, True, -3.0),
    (3, 1.0, False, -3.0),
    (5, 1.0, False, -3.0),
    (5, 0.6, False, -2.0),
    (5, 1.3, True, -2.0),
]


@pytest.mark.parametrize("beam,lenpen,pet_shape,eos_offset", CASES)
def test_matches_reference_and_teacher_forcing(beam, lenpen, pet_shape, eos_offset):
    model = tiny_model(seed=beam, pet_shape=pet_shape)
    bias = torch.randn(VOCAB, generator=torch.Generator().manual_seed(7))
    bias_logits(model, bias, eos_table(beam, eos_offset))
    lengths = [9, 3, 12, 6, 2, 9, 7]
    src = random_sources(lengths, seed=beam)
    max_len_a, max_len_b = 1.2, 4

    calls = []
    model.decoder.register_forward_pre_hook(lambda _m, args: calls.append(args[0].size(0)))
    model.train()  # generate() must switch to eval mode (dropout off) and back
    hyps = BeamSearch(model, beam=beam, max_len_a=max_len_a, max_len_b=max_len_b, lenpen=lenpen).generate(src)
    rows_per_call = list(calls)  # the reference below calls the decoder too
    assert model.training
    model.eval()

    assert len(hyps) == len(lengths)
    lens_seen = set()
    for i, sent in enumerate(hyps):
        with torch.inference_mode():
            ref, max_len = reference_beam_search(model, src[i], beam, max_len_a, max_len_b, lenpen)
        assert len(sent) == len(ref) and len(sent) >= 1
        assert [h.score for h in sent] == sorted((h.score for h in sent), reverse=True)
        for h, (ref_tokens, ref_score, ref_pos) in zip(sent, ref):
            assert h.tokens.tolist() == ref_tokens
            assert h.score == pytest.approx(ref_score, abs=1e-4)
            assert torch.allclose(h.positional_scores, torch.tensor(ref_pos), atol=1e-4)
            assert int(h.tokens[-1]) == EOS and EOS not in h.output_tokens.tolist()
            assert PAD not in h.tokens.tolist()
            assert 1 <= len(h) <= max_len + 1
            # Reported score = teacher-forced log-prob sum / len**lenpen.
            with torch.inference_mode():
                tf = teacher_forced_logprobs(model, src[i], h.tokens)
            assert torch.allclose(h.positional_scores, tf, atol=1e-4)
            assert h.score == pytest.approx(tf.sum().item() / len(h) ** lenpen, abs=1e-4)
            lens_seen.add(len(h))
    assert len(lens_seen) >= 3  # hypotheses of many lengths
    # Finished sentences leave the batch: the decoder sees fewer rows over time.
    assert rows_per_call[0] == len(lengths)  # step 0: one row per sentence
    assert rows_per_call[1] == len(lengths) * beam
    assert rows_per_call[1:] == sorted(rows_per_call[1:], reverse=True)
    assert len(set(rows_per_call)) > 2


def test_cross_attention_projected_once_per_batch():
    model = tiny_model(seed=3)
    calls = []
    for layer in model.decoder.layers:
        for proj in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj):
            proj.register_forward_hook(lambda _m, args, _o: calls.append(args[0].size(0)))
    src = random_sources([8, 5, 11], seed=1)
    hyps = BeamSearch(model, beam=4, max_len_a=1.2, max_len_b=10).generate(src)
    assert max(len(h) for s in hyps for h in s) > 5  # many decoder steps ran
    # 2 layers x (k, v), once each, on one row per sentence (not per beam).
    assert calls == [3] * 4


@pytest.mark.parametrize("beam", [1, 5])
def test_max_length_respected_and_capped(beam):
    model = tiny_model(seed=4, max_positions=20)
    bias = torch.zeros(VOCAB)
    bias[EOS] = -1e4  # </s> never wins on its own: only the length limit ends hypotheses
    bias_logits(model, bias)
    lengths = [4, 7, 15]  # 15 -> int(1.2*15+3) = 21, capped at max_positions - 1 = 19
    src = random_sources(lengths, seed=5)
    search = BeamSearch(model, beam=beam, max_len_a=1.2, max_len_b=3)
    expected = [min(int(1.2 * n + 3), 19) for n in lengths]
    assert search.max_lengths(lengths) == expected == [7, 11, 19]
    for sent, max_len in zip(search.generate(src), expected):
        assert len(sent) == beam  # </s> forced for every beam at the last step
        for h in sent:
            assert len(h) == max_len + 1 and int(h.tokens[-1]) == EOS
            assert EOS not in h.output_tokens.tolist()


def test_first_step_never_ends_and_strip_eos():
    model = tiny_model(seed=6)
    bias = torch.zeros(VOCAB)
    bias[EOS] = 1e4  # </s> always wins, except at step 0 where it is forbidden
    bias_logits(model, bias)
    hyps = BeamSearch.greedy(model).generate(random_sources([5, 3], seed=2))
    for sent in hyps:
        assert len(sent) == 1 and len(sent[0]) == 2
    assert strip_eos(torch.tensor([5, 6, EOS]), EOS).tolist() == [5, 6]
    assert strip_eos(torch.tensor([5, 6]), EOS).tolist() == [5, 6]


def test_nan_log_probs_are_never_chosen():
    model = tiny_model(seed=12)
    bias = torch.zeros(VOCAB)
    bias[7] = math.nan  # a broken logit: fairseq maps NaN log-probs to -inf
    bias_logits(model, bias)
    hyps = BeamSearch(model, beam=5, max_len_b=3).generate(random_sources([6, 4], seed=3))
    for sent in hyps:
        for h in sent:
            assert 7 not in h.tokens.tolist() and math.isfinite(h.score)


def test_result_does_not_depend_on_batch_composition():
    model = tiny_model(seed=8)
    lengths = [10, 4, 7, 13]
    src = random_sources(lengths, seed=9)
    search = BeamSearch(model, beam=5, max_len_a=1.2, max_len_b=5)
    batched = search.generate(src)
    for i, n in enumerate(lengths):
        alone = search.generate(src[i : i + 1, :n])[0]
        assert [h.tokens.tolist() for h in alone] == [h.tokens.tolist() for h in batched[i]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[i]], abs=1e-4)


class CopyModel(torch.nn.Module):
    """A hand-built "trained" copy model with pet's model interface.

    The decoder puts most probability on the source token at its position (a
    little elsewhere, so the beam has real alternatives). It also checks the
    search's bookkeeping: its self-attention cache holds the prefix each row
    was extended from, which must equal the prefix it is given (beam reordering
    and batch shrinking kept rows aligned), and its cross-attention cache must
    match the encoder rows it is given.
    """

    def __init__(self, vocab: int):
        super().__init__()
        self.spec = SimpleNamespace(max_positions=64, decoder=SimpleNamespace(vocab_size=vocab))
        self.vocab = vocab
        self.noise = torch.randn(vocab, generator=torch.Generator().manual_seed(0))
        self.steps = 0

    def encoder(self, src_tokens):
        return EncoderOut(F.one_hot(src_tokens, self.vocab).float(), src_tokens.eq(PAD))

    def decoder(self, prev, enc, cache=None):
        self.steps += 1
        # Encoder states are one row per sentence; decoder rows are each
        # sentence's hypotheses, sentence-major (pet's cross-attention contract).
        assert prev.size(0) % enc.out.size(0) == 0
        source = enc.out.repeat_interleave(prev.size(0) // enc.out.size(0), dim=0)
        if cache is not None:
            # The self-attention history is stored as pet's model stores it,
            # (rows, heads, time, dim): here the prefix tokens themselves.
            hist, cross = cache.setdefault("0.self", {}), cache.setdefault("0.cross", {})
            if "k" in hist:
                assert torch.equal(hist["k"][:, 0, :, 0], prev[:, :-1])
                assert torch.equal(hist["v"], hist["k"])
                assert torch.equal(cross["k"], enc.out)
            hist["k"] = hist["v"] = prev[:, None, :, None].clone()
            cross["k"] = enc.out
        t = prev.size(1) - 1
        if t < enc.out.size(1):
            target = source[:, t]
        else:
            target = F.one_hot(torch.full((prev.size(0),), EOS), self.vocab).float()
        logits = 4.0 * target + 0.5 * self.noise
        return logits.unsqueeze(1), None

    reorder_cache = staticmethod(TransformerModel.reorder_cache)


@pytest.mark.parametrize("beam", [1, 2, 5])
def test_copy_model_copies_and_keeps_rows_aligned(beam):
    model = CopyModel(vocab=20)
    lengths = [6, 2, 9, 4, 9, 5]
    src = random_sources(lengths, seed=11, vocab=20)
    hyps = BeamSearch(model, beam=beam).generate(src)
    for i, sent in enumerate(hyps):
        assert len(sent) == beam
        assert sent[0].tokens.tolist() == src[i][src[i].ne(PAD)].tolist()
        assert sent[0].score > sent[-1].score or beam == 1
    assert model.steps < 20  # sentences end as soon as they have beam hypotheses


def test_trained_copy_model_copies():
    """A 1-layer Transformer trained for a few seconds on a copy task: beam
    search returns the source."""
    vocab, steps = 14, 400
    model = tiny_model(
        seed=0, vocab=vocab, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, dropout=0.0
    )
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        n = int(torch.randint(3, 8, (1,), generator=g))
        body = torch.randint(4, vocab, (32, n), generator=g)
        eos = torch.full((32, 1), EOS)
        logits, _, _ = model(torch.cat([body, eos], 1), torch.cat([eos, body], 1))
        loss = F.cross_entropy(logits.reshape(-1, vocab), torch.cat([body, eos], 1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    lengths = [7, 4, 6, 7, 5, 3, 7, 6] * 8
    src = random_sources(lengths, seed=2, vocab=vocab)
    for beam in (1, 5):
        hyps = BeamSearch(model, beam=beam).generate(src)
        copied = sum(hyps[i][0].tokens.tolist() == src[i][src[i].ne(PAD)].tolist() for i in range(len(lengths)))
        assert copied >= 0.95 * len(lengths)  # 63/64 when written
