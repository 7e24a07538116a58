"""Post-LayerNorm encoder-decoder Transformer (fairseq's ``transformer`` family).

One model class covers three things the rest of pet needs, all driven by a
``TransformerSpec``:

* the plain baseline (``transformer_iwslt_de_en`` reproduces fairseq's
  39,469,056 parameters with the 8,848/6,632 dictionaries);
* SRP's pruning-safe variant (``spec.gated``): connectivity buffers ``c_emb``,
  ``c_qk``, ``c_vo``, ``c_fc`` multiply the residual stream, queries, head
  outputs and FFN activations, and LayerNorms become weighted over live
  dimensions, so that a dimension whose c reaches 0 can be sliced away without
  changing any output;
* PET's weight sharing: a physical layer may serve several depths (with
  permuted q/k/v roles in the encoder), and decoder self/cross attention may
  share one query projection. Sharing is by module identity, never by copying.

Tensors are batch-first: (batch, time, channels). Incremental decoding keeps
one cache entry per (depth, attention) so a layer used twice keeps two caches
(:mod:`pet.models.incremental`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pet.models.dropout import dropout
from pet.models.incremental import IncrementalCache, append_step, reorder_cache
from pet.models.spec import AttentionSpec, LayerSpec, StackSpec, TransformerSpec


def linear(in_features: int, out_features: int) -> nn.Linear:
    """Xavier-uniform weight, zero bias: fairseq's attention output projection."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def input_projection(in_features: int, out_features: int, gain: float) -> nn.Linear:
    """fairseq's q/k/v projections: xavier-uniform weight with ``gain`` (1/sqrt 2
    when query and key/value inputs have the same width: fairseq reports much
    better convergence with it), PyTorch's default bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    return layer


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's sinusoidal positions: [sin | cos] halves, row padding_idx zero."""
    half = dim // 2
    freq = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -freq)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class StreamNorm(nn.Module):
    """LayerNorm over a residual stream that may be gated by ``c_emb``.

    Without a gate and at full width it is exactly ``F.layer_norm``. With a gate,
    the weighted variant takes mean and variance with weights c (dimensions at
    c=0 do not count) and multiplies the output by c; the unweighted variant
    (the original code's default) normalises over ``norm_width`` dimensions,
    counting removed or gated-off dimensions as zeros.
    """

    def __init__(self, dim: int, norm_width: int, mode: str, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.norm_width = norm_width
        self.mode = mode
        self.eps = eps

    def forward(self, x: Tensor, c: Optional[Tensor] = None) -> Tensor:
        dim = x.size(-1)
        if c is None and (self.mode == "weighted" or self.norm_width == dim):
            return F.layer_norm(x, (dim,), self.weight, self.bias, self.eps)
        if self.mode == "weighted":
            total = c.sum()
            mean = (x * c).sum(-1, keepdim=True) / total
            var = (c * (x - mean).pow(2)).sum(-1, keepdim=True) / total
        else:
            if c is not None:
                x = x * c
            n = self.norm_width
            mean = x.sum(-1, keepdim=True) / n
            var = ((x - mean).pow(2).sum(-1, keepdim=True) + (n - dim) * mean.pow(2)) / n
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        return y if c is None else y * c


class Attention(nn.Module):
    """Multi-head attention with separate q/k and v/o head sizes.

    ``roles`` lets PET's encoder reuse a layer with permuted projections: the
    matrix stored in ``q_proj`` may compute keys on a second pass, etc.
    """

    def __init__(
        self,
        spec: AttentionSpec,
        q_in: int,
        kv_in: int,
        out_dim: int,
        dropout: float,
        gated: bool,
        shared_q_proj: Optional[nn.Linear] = None,
    ):
        super().__init__()
        h = spec.heads
        self.heads, self.qk_dim, self.vo_dim = h, spec.qk_dim, spec.vo_dim
        self.scaling = spec.scale_dim**-0.5
        self.dropout = dropout
        # fairseq's qkv_same_dim: key/value inputs as wide as the query input.
        gain = 2**-0.5 if kv_in == q_in else 1.0
        self.q_proj = shared_q_proj if shared_q_proj is not None else input_projection(q_in, h * spec.qk_dim, gain)
        self.k_proj = input_projection(kv_in, h * spec.qk_dim, gain)
        self.v_proj = input_projection(kv_in, h * spec.vo_dim, gain)
        self.out_proj = linear(h * spec.vo_dim, out_dim)
        if gated:
            self.register_buffer("c_qk", torch.ones(h * spec.qk_dim))
            self.register_buffer("c_vo", torch.ones(h * spec.vo_dim))
        else:
            self.c_qk = self.c_vo = None

    def _projections(self, roles: str) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        stored = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj}
        # roles[i] names which stored matrix serves as query (i=0), key, value.
        return stored[roles[0]], stored[roles[1]], stored[roles[2]]

    def _split(self, x: Tensor, head_dim: int) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key_value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        causal: bool = False,
        cache: Optional[dict[str, Tensor]] = None,
        static_kv: bool = False,
        roles: str = "qkv",
    ) -> Tensor:
        """query (B, Tq, C). key_value None means self-attention.

        cache: for self-attention, keys/values of earlier steps are appended;
        for cross-attention (static_kv), they are computed once and reused.
        """
        q_proj, k_proj, v_proj = (self.q_proj, self.k_proj, self.v_proj) if roles == "qkv" else self._projections(roles)
        q = q_proj(query)
        if self.c_qk is not None:
            q = q * self.c_qk
        q = self._split(q, self.qk_dim)
        source = query if key_value is None else key_value
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k = self._split(k_proj(source), self.qk_dim)
            v = self._split(v_proj(source), self.vo_dim)
            if cache is not None:
                if not static_kv and "k" in cache:
                    k, v = append_step(cache, "k", k), append_step(cache, "v", v)
                cache["k"], cache["v"] = k, v
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]  # True = attend
        b, _, t, _ = q.shape
        group = b // k.size(0)
        if group > 1:
            # r hypotheses of one sentence attend to the same encoder states:
            # their queries become one sentence's r*t queries (no causal mask
            # in cross-attention), so keys/values are never copied per beam
            # and each product serves r queries at once.
            q = q.view(k.size(0), group, self.heads, t, -1).transpose(1, 2).reshape(k.size(0), self.heads, group * t, -1)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal and mask is None,
            scale=self.scaling,
        )
        if group > 1:
            out = out.view(k.size(0), self.heads, group, t, -1).transpose(1, 2).reshape(b, self.heads, t, -1)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.vo_dim)
        if self.c_vo is not None:
            out = out * self.c_vo
        return self.out_proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation_dropout: float, gated: bool):
        super().__init__()
        # PyTorch's default init, as fairseq's FFN uses (no xavier here).
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.activation_dropout = activation_dropout
        if gated:
            self.register_buffer("c_fc", torch.ones(ffn_dim))
        else:
            self.c_fc = None

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x))
        if self.c_fc is not None:
            x = x * self.c_fc
        x = dropout(x, self.activation_dropout, self.training)
        return self.fc2(x)


class EncoderLayer(nn.Module):
    def __init__(self, spec: LayerSpec, stack: StackSpec, model: TransformerSpec):
        super().__init__()
        d = stack.embed_dim
        self.self_attn = Attention(spec.self_attn, d, d, d, model.attention_dropout, model.gated)
        self.self_attn_layer_norm = StreamNorm(d, stack.norm_width, model.layernorm)
        self.ffn = FeedForward(d, spec.ffn_dim, model.activation_dropout, model.gated)
        self.final_layer_norm = StreamNorm(d, stack.norm_width, model.layernorm)
        self.dropout = model.dropout

    def forward(self, x: Tensor, padding_mask: Optional[Tensor], c_emb: Optional[Tensor], roles: str) -> Tensor:
        h = self.self_attn(x, None, key_padding_mask=padding_mask, roles=roles)
        x = self.self_attn_layer_norm(x + dropout(h, self.dropout, self.training), c_emb)
        h = self.ffn(x)
        return self.final_layer_norm(x + dropout(h, self.dropout, self.training), c_emb)


class DecoderLayer(nn.Module):
    def __init__(self, spec: LayerSpec, stack: StackSpec, encoder_dim: int, model: TransformerSpec):
        super().__init__()
        d = stack.embed_dim
        assert spec.cross_attn is not None, "decoder layers need a cross-attention spec"
        self.self_attn = Attention(spec.self_attn, d, d, d, model.attention_dropout, model.gated)
        self.self_attn_layer_norm = StreamNorm(d, stack.norm_width, model.layernorm)
        shared_q = self.self_attn.q_proj if stack.share_query else None
        self.encoder_attn = Attention(
            spec.cross_attn, d, encoder_dim, d, model.attention_dropout, model.gated, shared_q_proj=shared_q
        )
        self.encoder_attn_layer_norm = StreamNorm(d, stack.norm_width, model.layernorm)
        self.ffn = FeedForward(d, spec.ffn_dim, model.activation_dropout, model.gated)
        self.final_layer_norm = StreamNorm(d, stack.norm_width, model.layernorm)
        self.dropout = model.dropout

    def forward(
        self,
        x: Tensor,
        encoder_out: Tensor,
        encoder_padding_mask: Optional[Tensor],
        c_emb: Optional[Tensor],
        cache: Optional[IncrementalCache],
        depth: int,
    ) -> Tensor:
        self_cache = cross_cache = None
        if cache is not None:
            self_cache = cache.setdefault(f"{depth}.self", {})
            cross_cache = cache.setdefault(f"{depth}.cross", {})
        h = self.self_attn(x, None, causal=cache is None, cache=self_cache)
        x = self.self_attn_layer_norm(x + dropout(h, self.dropout, self.training), c_emb)
        h = self.encoder_attn(x, encoder_out, key_padding_mask=encoder_padding_mask, cache=cross_cache, static_kv=True)
        x = self.encoder_attn_layer_norm(x + dropout(h, self.dropout, self.training), c_emb)
        h = self.ffn(x)
        return self.final_layer_norm(x + dropout(h, self.dropout, self.training), c_emb)


class Embedder(nn.Module):
    """Scaled token embeddings plus sinusoidal positions, optionally gated."""

    def __init__(self, stack: StackSpec, model: TransformerSpec):
        super().__init__()
        self.padding_idx = model.padding_idx
        self.embed_tokens = nn.Embedding(stack.vocab_size, stack.embed_dim, padding_idx=model.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=stack.embed_dim**-0.5)
        nn.init.constant_(self.embed_tokens.weight[model.padding_idx], 0.0)
        self.embed_scale = math.sqrt(stack.embed_scale_dim)
        table = sinusoidal_table(model.max_positions + model.padding_idx + 1, stack.embed_scale_dim, model.padding_idx)
        if stack.position_dims is not None:
            table = table[:, stack.position_dims]
        self.register_buffer("positions", table, persistent=False)
        if model.gated:
            self.register_buffer("c_emb", torch.ones(stack.embed_dim))
        else:
            self.c_emb = None
        self.dropout = model.dropout

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens (B, T); ``start`` is the time step of tokens[:, 0]."""
        t = tokens.size(1)
        first = self.padding_idx + 1 + start
        if first + t > self.positions.size(0):
            raise ValueError(
                f"sequence of {start + t} tokens exceeds model.max_positions={self.positions.size(0) - self.padding_idx - 1}"
            )
        x = self.embed_scale * self.embed_tokens(tokens) + self.positions[first : first + t]
        if self.c_emb is not None:
            x = x * self.c_emb
        return dropout(x, self.dropout, self.training)


@dataclass
class EncoderOut:
    out: Tensor  # (B, S, C)
    padding_mask: Tensor  # (B, S) True at padding
    states: Optional[list[Tensor]] = None  # output of every depth, if asked
    # Whether any padding exists, decided once per batch: checking it at every
    # decoding step would force a device sync per step on GPU.
    has_padding: bool = True

    @property
    def attention_mask(self) -> Optional[Tensor]:
        return self.padding_mask if self.has_padding else None

    def index_select(self, order: Tensor) -> "EncoderOut":
        return EncoderOut(
            self.out.index_select(0, order),
            self.padding_mask.index_select(0, order),
            None if self.states is None else [s.index_select(0, order) for s in self.states],
            self.has_padding,
        )


class TransformerEncoder(nn.Module):
    def __init__(self, stack: StackSpec, model: TransformerSpec):
        super().__init__()
        self.spec = stack
        self.embed = Embedder(stack, model)
        self.layers = nn.ModuleList(EncoderLayer(l, stack, model) for l in stack.layers)
        self.roles = list(stack.attention_roles) or ["qkv"] * stack.depth

    def forward(self, src_tokens: Tensor, return_states: bool = False) -> EncoderOut:
        padding_mask = src_tokens.eq(self.embed.padding_idx)
        # A batch without padding needs no mask, which lets SDPA pick a faster kernel.
        has_padding = bool(padding_mask.any())
        mask = padding_mask if has_padding else None
        x = self.embed(src_tokens)
        c_emb = self.embed.c_emb
        states = [] if return_states else None
        for depth, idx in enumerate(self.spec.layer_order):
            x = self.layers[idx](x, mask, c_emb, self.roles[depth])
            if states is not None:
                states.append(x)
        return EncoderOut(x, padding_mask, states, has_padding)


class TransformerDecoder(nn.Module):
    def __init__(self, stack: StackSpec, encoder_dim: int, model: TransformerSpec):
        super().__init__()
        self.spec = stack
        self.embed = Embedder(stack, model)
        self.layers = nn.ModuleList(DecoderLayer(l, stack, encoder_dim, model) for l in stack.layers)
        if model.share_decoder_input_output_embed:
            self.output_projection = None
        else:
            self.output_projection = nn.Linear(stack.embed_dim, stack.vocab_size, bias=False)
            nn.init.normal_(self.output_projection.weight, mean=0.0, std=stack.embed_dim**-0.5)

    def output_weight(self) -> Tensor:
        if self.output_projection is None:
            return self.embed.embed_tokens.weight
        return self.output_projection.weight

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOut,
        cache: Optional[IncrementalCache] = None,
        return_states: bool = False,
    ) -> tuple[Tensor, Optional[list[Tensor]]]:
        """Logits (B, T, V). With a cache, only the last position is computed."""
        start = 0
        if cache is not None:
            start = prev_output_tokens.size(1) - 1
            prev_output_tokens = prev_output_tokens[:, -1:]
        x = self.embed(prev_output_tokens, start=start)
        c_emb = self.embed.c_emb
        enc_mask = encoder_out.attention_mask
        states = [] if return_states else None
        for depth, idx in enumerate(self.spec.layer_order):
            x = self.layers[idx](x, encoder_out.out, enc_mask, c_emb, cache, depth)
            if states is not None:
                states.append(x)
        return F.linear(x, self.output_weight()), states


class TransformerModel(nn.Module):
    def __init__(self, spec: TransformerSpec):
        super().__init__()
        self.spec = spec
        self.encoder = TransformerEncoder(spec.encoder, spec)
        self.decoder = TransformerDecoder(spec.decoder, spec.encoder.embed_dim, spec)

    def forward(
        self, src_tokens: Tensor, prev_output_tokens: Tensor, return_states: bool = False
    ) -> tuple[Tensor, EncoderOut, Optional[list[Tensor]]]:
        enc = self.encoder(src_tokens, return_states=return_states)
        logits, dec_states = self.decoder(prev_output_tokens, enc, return_states=return_states)
        return logits, enc, dec_states

    # what decoders (beam search, FLOP counting) call on the model they decode with
    reorder_cache = staticmethod(reorder_cache)

    def num_parameters(self) -> int:
        # parameters() yields each shared tensor once, so this is the real size.
        return sum(p.numel() for p in self.parameters())
