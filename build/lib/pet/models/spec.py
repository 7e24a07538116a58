"""The complete shape of a model, as stored in every checkpoint.

The Hydra ``ModelConfig`` describes the regular shapes a user asks for. Pruning
makes shapes irregular (per-layer FFN widths, fewer q/k than v/o dimensions per
head, a residual width whose embedding and attention scales keep their original
values) and PET reuses physical layers. ``TransformerSpec`` expresses all of
that explicitly, so a checkpoint rebuilds its model with no config, no pruning
code and no original checkpoint (nanoGPT-style "model args in the checkpoint").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from pet.errors import CheckpointError, ConfigError, brief


@dataclass
class AttentionSpec:
    heads: int
    qk_dim: int  # per head
    vo_dim: int  # per head
    # Scores are scaled by scale_dim**-0.5; it stays the original head size
    # after pruning so that removing dimensions does not change outputs.
    scale_dim: int


@dataclass
class LayerSpec:
    self_attn: AttentionSpec
    ffn_dim: int
    cross_attn: Optional[AttentionSpec] = None


@dataclass
class StackSpec:
    """One side (encoder or decoder): embeddings plus its physical layers."""

    vocab_size: int
    embed_dim: int
    layers: list[LayerSpec]
    # Physical layer used at each effective depth (PET reuses layers).
    layer_order: list[int] = field(default_factory=list)
    # Encoder only: projection roles per depth, a permutation of "qkv".
    attention_roles: list[str] = field(default_factory=list)
    # Decoder only: cross-attention reuses the self-attention query projection.
    share_query: bool = False
    # Original width: embeddings are scaled by sqrt(embed_scale_dim).
    embed_scale_dim: int = 0
    # Which of the original sinusoidal dimensions survive (None = all).
    position_dims: Optional[list[int]] = None
    # Width an unweighted LayerNorm averages over (original width, removed
    # dimensions count as zeros). Equal to embed_dim for a plain model.
    norm_width: int = 0

    def __post_init__(self) -> None:
        if not self.layer_order:
            self.layer_order = list(range(len(self.layers)))
        if not self.embed_scale_dim:
            self.embed_scale_dim = self.embed_dim
        if not self.norm_width:
            self.norm_width = self.embed_dim

    @property
    def depth(self) -> int:
        return len(self.layer_order)


@dataclass
class TransformerSpec:
    encoder: StackSpec
    decoder: StackSpec
    dropout: float = 0.3
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_positions: int = 1024
    share_decoder_input_output_embed: bool = True
    padding_idx: int = 1
    # Connectivity parameters (SRP) present and applied.
    gated: bool = False
    # weighted | unweighted LayerNorm over gated streams
    layernorm: str = "weighted"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerSpec":
        try:
            def stack(s: dict[str, Any]) -> StackSpec:
                layers = [
                    LayerSpec(
                        self_attn=AttentionSpec(**l["self_attn"]),
                        ffn_dim=l["ffn_dim"],
                        cross_attn=AttentionSpec(**l["cross_attn"]) if l.get("cross_attn") else None,
                    )
                    for l in s["layers"]
                ]
                return StackSpec(**{**s, "layers": layers})

            return cls(**{**d, "encoder": stack(d["encoder"]), "decoder": stack(d["decoder"])})
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint model spec is malformed ({brief(e)}); was it written by pet?") from e


def spec_from_config(model_cfg: Any, src_vocab_size: int, tgt_vocab_size: int, padding_idx: int = 1) -> TransformerSpec:
    """Regular Transformer shape from a ``ModelConfig`` and vocabulary sizes."""
    m = model_cfg
    enc_dim, dec_dim = m.encoder_embed_dim, m.decoder_embed_dim
    enc_head = enc_dim // m.encoder_heads
    dec_head = dec_dim // m.decoder_heads

    def attn(heads: int, head_dim: int) -> AttentionSpec:
        return AttentionSpec(heads=heads, qk_dim=head_dim, vo_dim=head_dim, scale_dim=head_dim)

    enc_layers = [
        LayerSpec(self_attn=attn(m.encoder_heads, enc_head), ffn_dim=m.encoder_ffn_dim)
        for _ in range(m.encoder_layers)
    ]
    dec_layers = [
        LayerSpec(
            self_attn=attn(m.decoder_heads, dec_head),
            cross_attn=attn(m.decoder_heads, dec_head),
            ffn_dim=m.decoder_ffn_dim,
        )
        for _ in range(m.decoder_layers)
    ]
    enc_order = list(m.encoder_layer_order) or list(range(m.encoder_layers))
    dec_order = list(m.decoder_layer_order) or list(range(m.decoder_layers))
    for side, order, n in (("encoder", enc_order, m.encoder_layers), ("decoder", dec_order, m.decoder_layers)):
        bad = [i for i in order if not 0 <= i < n]
        if bad:
            raise ConfigError(
                f"model.{side}_layer_order refers to layers {bad}, but model.{side}_layers={n}"
            )
    roles = list(m.encoder_attention_roles)
    if roles and len(roles) != len(enc_order):
        raise ConfigError(
            f"model.encoder_attention_roles has {len(roles)} entries for {len(enc_order)} encoder depths"
        )
    return TransformerSpec(
        encoder=StackSpec(
            vocab_size=src_vocab_size,
            embed_dim=enc_dim,
            layers=enc_layers,
            layer_order=enc_order,
            attention_roles=roles,
        ),
        decoder=StackSpec(
            vocab_size=tgt_vocab_size,
            embed_dim=dec_dim,
            layers=dec_layers,
            layer_order=dec_order,
            share_query=bool(m.decoder_share_query),
        ),
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
        activation_dropout=m.activation_dropout,
        max_positions=m.max_positions,
        share_decoder_input_output_embed=m.share_decoder_input_output_embed,
        padding_idx=padding_idx,
    )


def fresh_spec(spec: TransformerSpec) -> TransformerSpec:
    """The same layer shapes for a model trained at them from scratch: embedding
    and attention scales, positions and LayerNorm widths of its own widths (a
    pruned spec keeps its origin's, which removal needs), no connectivity
    parameters. What a dense baseline of a pruned shape is built from."""
    fresh = TransformerSpec.from_dict(spec.to_dict())
    for stack in (fresh.encoder, fresh.decoder):
        stack.embed_scale_dim = stack.norm_width = stack.embed_dim
        stack.position_dims = None
        for layer in stack.layers:
            for attn in (layer.self_attn, layer.cross_attn):
                if attn is not None:
                    attn.scale_dim = attn.qk_dim
    fresh.gated = False
    return fresh
