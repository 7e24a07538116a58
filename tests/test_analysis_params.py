"""Parameter breakdown: rows sum to the model's size, shared tensors count once."""

from __future__ import annotations

from omegaconf import OmegaConf

from pet.analysis.params import ParamRow, format_table, parameter_breakdown
from pet.config.schema import ModelConfig
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel


def build(src_vocab: int = 50, tgt_vocab: int = 40, **overrides) -> TransformerModel:
    base = dict(
        name="x", encoder_layers=2, decoder_layers=2, encoder_embed_dim=32, decoder_embed_dim=24,
        encoder_ffn_dim=48, decoder_ffn_dim=40, encoder_heads=4, decoder_heads=4,
    )
    base.update(overrides)
    cfg = OmegaConf.structured(ModelConfig(**base))
    return TransformerModel(spec_from_config(cfg, src_vocab, tgt_vocab))


def as_dict(rows: list[ParamRow]) -> dict[str, int]:
    return {r.component: r.count for r in rows}


def test_plain_model_rows_sum_to_num_parameters():
    model = build()
    rows, total = parameter_breakdown(model)
    assert total == model.num_parameters() == sum(r.count for r in rows)
    c = as_dict(rows)
    d, dd, f, fd = 32, 24, 48, 40
    assert c["encoder.embed_tokens"] == 50 * d
    assert c["encoder.self_attn"] == 2 * 4 * (d * d + d)
    assert c["encoder.ffn"] == 2 * (d * f + f + f * d + d)
    assert c["encoder.layernorm"] == 2 * 2 * 2 * d
    assert c["decoder.embed_tokens"] == 40 * dd
    # Cross-attention: query/output on the decoder width, keys/values from the encoder width.
    assert c["decoder.cross_attn"] == 2 * (2 * (dd * dd + dd) + 2 * (d * dd + dd))
    assert c["decoder.ffn"] == 2 * (dd * fd + fd + fd * dd + dd)
    assert c["decoder.layernorm"] == 2 * 3 * 2 * dd
    assert c["decoder.output_projection"] == 0  # tied
    out_row = next(r for r in rows if r.component == "decoder.output_projection")
    assert "shared" in out_row.note


def test_untied_output_projection_is_counted():
    model = build(share_decoder_input_output_embed=False)
    rows, total = parameter_breakdown(model)
    assert total == model.num_parameters()
    assert as_dict(rows)["decoder.output_projection"] == 40 * 24


def test_fairseq_transformer_iwslt_de_en_size():
    model = TransformerModel(spec_from_config(OmegaConf.structured(ModelConfig(name="x")), 8848, 6632))
    rows, total = parameter_breakdown(model)
    assert total == 39_469_056 == model.num_parameters()
    assert sum(r.count for r in rows) == total


def test_shared_layers_and_query_count_once():
    model = build(
        encoder_layer_order=[0, 1, 0, 1],
        encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
        decoder_layer_order=[0, 1, 0, 1],
        decoder_share_query=True,
    )
    rows, total = parameter_breakdown(model)
    assert total == model.num_parameters() == sum(r.count for r in rows)
    # Counting every registration would count each shared query projection twice.
    registered = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    d, dd = 32, 24
    assert registered - total == 2 * (dd * dd + dd)
    c = as_dict(rows)
    # Two physical layers, whatever the depth; cross-attention keeps k, v, out only.
    assert c["encoder.self_attn"] == 2 * 4 * (d * d + d)
    assert c["decoder.cross_attn"] == 2 * ((dd * dd + dd) + 2 * (d * dd + dd))
    notes = {r.component: r.note for r in rows}
    assert "shared with decoder.self_attn" in notes["decoder.cross_attn"]
    assert "4 depths" in notes["encoder.self_attn"]
    per_layer, per_layer_total = parameter_breakdown(model, per_layer=True)
    assert per_layer_total == total
    assert {r.component for r in per_layer} >= {"encoder.layers.1.ffn", "decoder.layers.0.cross_attn"}


def test_pet_student_size():
    model = TransformerModel(
        spec_from_config(
            OmegaConf.structured(
                ModelConfig(
                    name="x", encoder_layers=2, decoder_layers=2, encoder_embed_dim=320, decoder_embed_dim=240,
                    encoder_ffn_dim=640, decoder_ffn_dim=480, encoder_layer_order=[0, 1, 0, 1],
                    encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"], decoder_layer_order=[0, 1, 0, 1],
                    decoder_share_query=True,
                )
            ),
            8848,
            6632,
        )
    )
    assert parameter_breakdown(model)[1] == 7_420_160


def test_format_table():
    rows, total = parameter_breakdown(build())
    text = format_table(rows, total)
    assert "decoder.cross_attn" in text
    assert f"{total:,}" in text.splitlines()[-1]
    # Plain (component, count) tuples are accepted too.
    assert "a" in format_table([("a", 3), ("b", 1)])
