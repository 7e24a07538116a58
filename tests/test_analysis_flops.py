"""FLOPs counting against a closed-form count of the matrix products.

Conventions (those of torch.utils.flop_counter): a (m x k) @ (k x n) product is
2*m*k*n FLOPs; biases, softmax, LayerNorm and element-wise ops are not counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from pet.analysis.flops import count_flops, flop_counter, format_flops
from pet.config.schema import ModelConfig
from pet.models.spec import AttentionSpec, LayerSpec, StackSpec, TransformerSpec, spec_from_config
from pet.models.transformer import TransformerModel


def build(**overrides) -> TransformerModel:
    base = dict(
        name="x", encoder_layers=2, decoder_layers=3, encoder_embed_dim=32, decoder_embed_dim=24,
        encoder_ffn_dim=48, decoder_ffn_dim=40, encoder_heads=4, decoder_heads=4,
    )
    base.update(overrides)
    return TransformerModel(spec_from_config(OmegaConf.structured(ModelConfig(**base)), 50, 40))


def analytic(spec: TransformerSpec, S: int, T: int) -> dict:
    """Closed-form FLOPs of one sentence (batch 1, beam 1) under incremental decoding."""
    enc, dec = spec.encoder, spec.decoder
    d, dd, V = enc.embed_dim, dec.embed_dim, dec.vocab_size
    enc_linear = enc_attn = 0
    for idx in enc.layer_order:
        layer = enc.layers[idx]
        a, f = layer.self_attn, layer.ffn_dim
        # per token: q, k (d -> H*qk), v (d -> H*vo), out (H*vo -> d), fc1, fc2
        enc_linear += 2 * (2 * d * a.heads * a.qk_dim + 2 * d * a.heads * a.vo_dim + 2 * d * f)
        # per token: scores over S keys (qk) and weighted sum of S values (vo)
        enc_attn += 2 * a.heads * S * (a.qk_dim + a.vo_dim)
    encoder = S * (enc_linear + enc_attn)

    step_fixed = 2 * dd * V  # output projection
    self_attn_per_key = cross_kv = 0
    for idx in dec.layer_order:
        layer = dec.layers[idx]
        a, c, f = layer.self_attn, layer.cross_attn, layer.ffn_dim
        step_fixed += 2 * (2 * dd * a.heads * a.qk_dim + 2 * dd * a.heads * a.vo_dim)  # self q, k, v, out
        step_fixed += 2 * (dd * c.heads * c.qk_dim + c.heads * c.vo_dim * dd)  # cross q, out
        step_fixed += 2 * c.heads * S * (c.qk_dim + c.vo_dim)  # cross attention over S keys
        step_fixed += 2 * 2 * dd * f  # ffn
        self_attn_per_key += 2 * a.heads * (a.qk_dim + a.vo_dim)
        # cross keys/values: S encoder states of width d (not dd), once per sentence
        cross_kv += 2 * S * d * c.heads * (c.qk_dim + c.vo_dim)
    # step t (1-based) attends over t cached keys (its own included)
    steps = [step_fixed + t * self_attn_per_key + (cross_kv if t == 1 else 0) for t in range(1, T + 1)]
    return {
        "encoder": encoder,
        "steps": steps,
        "decoder": sum(steps),
        "step_fixed": step_fixed,
        "self_attn_per_key": self_attn_per_key,
        "cross_kv": cross_kv,
    }


def test_cpu_sdpa_is_counted():
    # Equal q/k and v head sizes make CPU SDPA pick its flash kernel, which the
    # stock FlopCounterMode has no formula for; ours counts it.
    q, k, v = torch.randn(1, 4, 10, 16), torch.randn(1, 4, 20, 16), torch.randn(1, 4, 20, 16)
    expected = 2 * 4 * 10 * 20 * 16 * 2
    with flop_counter() as fc:
        F.scaled_dot_product_attention(q, k, v)
    assert fc.get_total_flops() == expected
    # Different v size: math fallback, counted through bmm.
    with flop_counter() as fc:
        F.scaled_dot_product_attention(q, k, torch.randn(1, 4, 20, 8))
    assert fc.get_total_flops() == 2 * 4 * 10 * 20 * (16 + 8)


def test_plain_model_matches_formula():
    model = build()
    S, T = 7, 5
    r = count_flops(model, src_len=S, tgt_len=T)
    a = analytic(model.spec, S, T)
    assert r.encoder_flops == a["encoder"]
    assert r.decoder_step_flops == a["steps"]
    assert r.decoder_flops == a["decoder"]
    assert r.decoder_per_tgt_token == a["decoder"] / T
    assert r.total_per_tgt_token == (a["encoder"] + a["decoder"]) / T
    b = r.breakdown
    assert b["decoder.cross_attn.kv_proj"] == a["cross_kv"]  # encoder width, once per sentence
    assert b["decoder.output_projection"] == T * 2 * 24 * 40
    assert b["encoder.self_attn.scores"] == 2 * 4 * S * S * 2 * 8 * 2  # 2 layers, H=4, head 8
    assert b["decoder.self_attn.scores"] == 3 * 2 * 4 * 2 * 6 * sum(range(1, T + 1))
    assert sum(b.values()) == r.total_flops
    assert "decoder per target token" in format_flops(r)


def test_decoder_cost_is_linear_per_step():
    model = build()
    S = 6
    a = analytic(model.spec, S, 12)
    r = count_flops(model, src_len=S, tgt_len=12)
    # Step t costs a constant plus attention over t keys: constant differences,
    # not a re-run of the prefix (which would grow the step cost quadratically).
    diffs = {r.decoder_step_flops[t] - r.decoder_step_flops[t - 1] for t in range(2, 12)}
    assert diffs == {a["self_attn_per_key"]}
    # Per target token: fixed + attention term (T+1)/2 + amortised cross k/v.
    for T in (6, 12):
        per_tok = count_flops(model, src_len=S, tgt_len=T).decoder_per_tgt_token
        expected = a["step_fixed"] + a["self_attn_per_key"] * (T + 1) / 2 + a["cross_kv"] / T
        assert abs(per_tok - expected) / expected < 1e-9


def test_irregular_pruned_shapes_match_formula():
    def attn(qk: int, vo: int) -> AttentionSpec:
        return AttentionSpec(heads=4, qk_dim=qk, vo_dim=vo, scale_dim=8)

    spec = TransformerSpec(
        encoder=StackSpec(vocab_size=50, embed_dim=28, layers=[LayerSpec(attn(5, 8), 40), LayerSpec(attn(6, 7), 17)],
                          embed_scale_dim=32, position_dims=list(range(28))),
        decoder=StackSpec(vocab_size=40, embed_dim=20, layers=[
            LayerSpec(attn(4, 6), 33, cross_attn=attn(3, 5)),
            LayerSpec(attn(6, 6), 9, cross_attn=attn(6, 6)),
        ], embed_scale_dim=24, position_dims=list(range(20))),
    )
    model = TransformerModel(spec)
    r = count_flops(model, src_len=9, tgt_len=4)
    a = analytic(spec, 9, 4)
    assert (r.encoder_flops, r.decoder_step_flops) == (a["encoder"], a["steps"])


def test_reused_layers_cost_like_their_depth():
    shared = build(
        encoder_layers=2, decoder_layers=2, encoder_layer_order=[0, 1, 0, 1],
        encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"], decoder_layer_order=[0, 1, 0, 1],
        decoder_share_query=True,
    )
    plain = build(encoder_layers=4, decoder_layers=4)
    rs, rp = count_flops(shared, 8, 6), count_flops(plain, 8, 6)
    # Sharing saves parameters, not computation.
    assert rs.encoder_flops == rp.encoder_flops == analytic(shared.spec, 8, 6)["encoder"]
    assert rs.decoder_step_flops == rp.decoder_step_flops
    assert rs.breakdown == rp.breakdown


def test_beam_search_cost():
    model = build()
    one, five = count_flops(model, 7, 6, beam=1), count_flops(model, 7, 6, beam=5)
    assert five.encoder_flops == one.encoder_flops
    # First step on one row (cross k/v once per sentence), then 5 rows.
    assert five.decoder_step_flops[0] == one.decoder_step_flops[0]
    assert five.decoder_step_flops[1:] == [5 * s for s in one.decoder_step_flops[1:]]


def test_real_source_and_mode_restored():
    model = build()
    model.train()
    src = torch.tensor([5, 6, 7, 2])
    r = count_flops(model, src_tokens=src, tgt_len=3)
    assert r.src_len == 4 and model.training
    assert r.to_dict()["encoder_per_src_token"] == r.encoder_flops / 4
