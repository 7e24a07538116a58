"""summarize(): params + FLOPs as a JSON-ready dict and a printable report."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from pet.analysis.summary import compare, format_comparison, format_summary, summarize
from pet.config.schema import ModelConfig
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel


def build(**overrides) -> TransformerModel:
    base = dict(
        name="x", encoder_layers=2, decoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=32,
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_heads=4, decoder_heads=4,
    )
    base.update(overrides)
    return TransformerModel(spec_from_config(OmegaConf.structured(ModelConfig(**base)), 50, 40))


def test_summary_dict_and_report():
    model = build()
    s = summarize(model, src_len=6, tgt_len=5, name="tiny")
    s = json.loads(json.dumps(s))  # plain JSON types only
    assert s["params"]["total"] == model.num_parameters()
    f = s["flops"]
    assert f["src_len"] == 6 and f["tgt_len"] == 5
    assert f["total_per_tgt_token"] == (f["encoder_flops"] + f["decoder_flops"]) / 5
    assert s["shape"]["decoder"]["ffn_dims"] == [64, 64]
    text = format_summary(s)
    for needle in ("Model summary: tiny", "encoder: 2 layers", "decoder.cross_attn", "decoder per target token"):
        assert needle in text


def test_compare_smaller_model():
    big = summarize(build(), 6, 5, name="big")
    small = summarize(build(encoder_ffn_dim=32, decoder_ffn_dim=32), 6, 5, name="small")
    change = compare(big, small)
    assert change["params"] < 0 and change["total_per_tgt_token"] < 0
    assert "small" in format_comparison(big, small)
