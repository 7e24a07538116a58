"""Latency measurement: positive numbers, exact step counts in fixed-length mode."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from pet.analysis.latency import (
    format_latency,
    latency_sweep,
    make_batches,
    make_translator,
    measure_latency,
    synthetic_batches,
)
from pet.config.schema import ModelConfig
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel


def build() -> TransformerModel:
    cfg = OmegaConf.structured(
        ModelConfig(
            name="x", encoder_layers=2, decoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=32,
            encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_heads=4, decoder_heads=4,
        )
    )
    torch.manual_seed(0)
    return TransformerModel(spec_from_config(cfg, 50, 40))


class StepCounter:
    def __init__(self, model: TransformerModel):
        self.calls = 0
        self.handle = model.decoder.register_forward_hook(self)

    def __call__(self, *args) -> None:
        self.calls += 1


def test_measure_latency_positive_and_restores_threads():
    model = build()
    threads = torch.get_num_threads()
    batches = synthetic_batches(4, 6, 2, 50)
    r = measure_latency(model, batches, beam=2, warmup=1, repeats=3, num_threads=1, max_len_a=0, max_len_b=4)
    assert r.threads == 1 and torch.get_num_threads() == threads
    assert len(r.times_s) == 3 and all(t > 0 for t in r.times_s)
    assert r.num_sentences == 4 and r.num_batches == 2 and r.batch_size == 2
    assert r.sentences_per_second > 0 and r.ms_per_sentence > 0
    assert abs(r.sentences_per_second * r.ms_per_sentence - 1000) < 1e-6
    assert r.to_dict()["fixed_length"] is None


def test_fixed_length_runs_exactly_L_decoder_steps():
    model = build()
    batches = synthetic_batches(3, 7, 3, 50)
    L = 6
    counter = StepCounter(model)
    out = make_translator(model, beam=3, fixed_length=L)(batches[0])
    assert counter.calls == L  # one decoder call per step, all sentences at once
    assert all(len(h) == L for hyps in out for h in hyps)  # L-1 tokens + </s>
    assert all(int(h.tokens[-1]) == 2 and 2 not in h.tokens[:-1].tolist() for hyps in out for h in hyps)

    counter.calls = 0
    r = measure_latency(model, batches, beam=3, fixed_length=L, warmup=2, repeats=3)
    assert counter.calls == (2 + 3) * L
    assert r.fixed_length == L and r.ms_per_sentence > 0


def test_custom_translate_fn():
    model = build()
    batches = synthetic_batches(2, 5, 1, 50)
    seen: list[torch.Tensor] = []

    @torch.inference_mode()
    def greedy(src: torch.Tensor, steps: int = 4) -> torch.Tensor:
        seen.append(src)
        enc = model.encoder(src)
        tokens = torch.full((src.size(0), 1), 2, dtype=torch.long)
        cache: dict = {}
        for _ in range(steps):
            logits, _ = model.decoder(tokens, enc, cache=cache)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
        return tokens

    counter = StepCounter(model)
    r = measure_latency(model, batches, beam=1, warmup=1, repeats=2, translate_fn=greedy)
    assert r.num_sentences == 2 and r.median_s > 0
    # every pass (1 warm-up + 2 timed) translates each batch with greedy, and only with greedy
    passes = [b.tolist() for b in batches] * (1 + 2)
    assert [s.tolist() for s in seen] == passes
    assert counter.calls == len(passes) * 4  # greedy's 4 steps per batch; beam search would run its own


def test_make_batches_right_pads_and_sorts():
    sents = [torch.tensor([5, 6, 2]), torch.tensor([7, 2]), torch.tensor([8, 9, 10, 2])]
    (b,) = make_batches(sents, 3)
    assert b.tolist() == [[7, 2, 1, 1], [5, 6, 2, 1], [8, 9, 10, 2]]


def test_latency_sweep_and_table():
    model = build()
    results = latency_sweep(model, batch_sizes=(1, 4), src_len=5, beam=2, fixed_length=3, repeats=1, num_sentences=4)
    assert [r.batch_size for r in results] == [1, 4]
    assert all(r.num_sentences == 4 for r in results)
    assert "ms/sent" in format_latency(results)
