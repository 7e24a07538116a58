"""A pet ``TransformerModel`` as a CTranslate2 ``TransformerSpec``.

The folder :func:`convert` writes (``model.bin``, ``config.json``, source and
target vocabularies) loads with a plain ``ctranslate2.Translator(folder)``: no
pet code is needed to translate with it. Every pet model family maps onto
CTranslate2's post-norm Transformer without changing what it computes:

* **Plain models**: post-norm layers (pet builds no pre-norm variant and no
  final LayerNorm), ReLU, LayerNorm epsilon 1e-5, q/k/v fused per attention
  module as CTranslate2's own fairseq converter does. Positions are pet's own
  sinusoid table from row ``padding_idx + 1`` on (CTranslate2's built-in
  sinusoids would start one row early), stored as explicit encodings. The
  embedding scale is written as its float value; a tied decoder table is also
  the output projection (CTranslate2 stores the identical array once).
* **Pruned models** (after physical removal): every width comes from the
  weight shapes (residual width per side, FFN width per layer). The original
  scales stay: ``scale_embeddings`` = sqrt(original width) and a per-module
  ``queries_scale`` = original head size ** -0.5. CTranslate2 splits each
  attention projection into heads of one size per module (``head_dim``), so
  the smaller of the per-head q/k and v/o sizes is zero-padded to the larger:
  zero query/key rows add nothing to a dot product, zero value rows meet zero
  output-projection columns. A weighted LayerNorm over the kept dimensions is
  an ordinary LayerNorm. An unweighted one averages over the original width
  with removed dimensions counted as zeros; that is exactly an ordinary
  LayerNorm over a residual stream zero-padded back to the original width
  (zero embeddings, positions, LayerNorm gains and biases, and zero rows in
  every projection writing the stream keep the padding at zero), so such a
  model is exported at its original residual width.
* **PET students**: shared layers are written out once per use, with the
  q/k/v roles of that use, and a decoder's shared query projection is written
  into both of its attention modules. CTranslate2 stores identical arrays once
  (aliases), so a reused layer costs disk only where its roles differ.

A model that still carries connectivity parameters is sliced first
(:func:`pet.pruning.removal.remove_pruned`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from pet.errors import PetError, brief
from pet.pruning.removal import RemovalError, remove_pruned

# The weight types pet exports (those the engine computes with on CPU). They
# are applied when the folder is written: int8 stores the projection and
# embedding matrices as int8 with one float scale per row (~4x smaller; the
# position tables, biases and LayerNorms stay float32) and loads as int8 by
# default. int8 and int8_float32 write the same file for a float32 model.
QUANTIZATIONS = ("float32", "int8", "int8_float32")
LAYER_NORM_EPSILON = 1e-5
# CTranslate2's padding token is "<blank>"; pet's (fairseq's) is "<pad>".
CT2_PAD = "<blank>"
LAYOUT_FILE = "pet_layout.json"


class ExportError(PetError):
    """The model cannot be exported as asked, or the export is not the model."""


def require_ctranslate2():
    try:
        import ctranslate2  # noqa: PLC0415 - optional dependency ctranslate2
    except ImportError as e:
        raise ExportError(
            "exporting to CTranslate2 needs the ctranslate2 package; install it with pip install -e '.[serve]'"
        ) from e
    return ctranslate2


def ct2_vocabulary(symbols: Sequence[str]) -> list[str]:
    """pet's symbols with the padding token renamed to CTranslate2's."""
    return [CT2_PAD if s == "<pad>" else s for s in symbols]


def _array(t: torch.Tensor) -> np.ndarray:
    # A copy: the engine's quantization works in place on the arrays it is given.
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _pad(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``a`` zero-padded at the end of ``axis`` to ``size``."""
    have = a.shape[axis]
    if have == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - have)
    return np.pad(a, widths)


def _per_head(a: np.ndarray, heads: int, have: int, want: int, axis: int) -> np.ndarray:
    """Zero-pad each of ``heads`` blocks of ``have`` entries along ``axis`` to ``want``."""
    if have == want:
        return a
    a = np.moveaxis(a, axis, 0)
    rest = a.shape[1:]
    a = _pad(a.reshape(heads, have, *rest), 1, want).reshape(heads * want, *rest)
    return np.moveaxis(a, 0, axis)


def _set_linear(spec: Any, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
    spec.weight = np.ascontiguousarray(weight)
    if bias is not None:
        spec.bias = np.ascontiguousarray(bias)


def _set_norm(spec: Any, norm: torch.nn.Module, width: int) -> None:
    spec.gamma = _pad(_array(norm.weight), 0, width)
    spec.beta = _pad(_array(norm.bias), 0, width)


def _attention(specs: Any, att: torch.nn.Module, roles: str, q_width: int, kv_width: int, self_attention: bool) -> Any:
    """A CTranslate2 attention spec computing pet's ``att`` with projection ``roles``."""
    heads, qk, vo = att.heads, att.qk_dim, att.vo_dim
    head_dim = max(qk, vo)
    q_proj, k_proj, v_proj = att._projections(roles)

    def projection(lin: torch.nn.Linear, have: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        if lin.weight.shape[0] != heads * have:
            raise ExportError(
                f"an attention projection has {lin.weight.shape[0]} outputs where {heads} heads of {have} were expected "
                f"(roles {roles!r} swap projections of different sizes)"
            )
        w = _pad(_per_head(_array(lin.weight), heads, have, head_dim, 0), 1, width)
        b = _per_head(_array(lin.bias), heads, have, head_dim, 0)
        return w, b

    wq, bq = projection(q_proj, qk, q_width)
    wk, bk = projection(k_proj, qk, kv_width)
    wv, bv = projection(v_proj, vo, kv_width)
    spec = specs.attention_spec.MultiHeadAttentionSpec(self_attention=self_attention, head_dim=head_dim)
    # The original head size's scale, whatever the exported head size.
    spec.queries_scale = np.float32(att.scaling)
    if self_attention:
        _set_linear(spec.linear[0], np.concatenate([wq, wk, wv]), np.concatenate([bq, bk, bv]))
    else:
        _set_linear(spec.linear[0], wq, bq)
        _set_linear(spec.linear[1], np.concatenate([wk, wv]), np.concatenate([bk, bv]))
    out = att.out_proj
    w_out = _per_head(_array(out.weight), heads, vo, head_dim, 1)
    _set_linear(spec.linear[-1], _pad(w_out, 0, q_width), _pad(_array(out.bias), 0, q_width))
    return spec


def _ffn(spec: Any, layer: torch.nn.Module, width: int) -> None:
    fc1, fc2 = layer.ffn.fc1, layer.ffn.fc2
    _set_linear(spec.linear_0, _pad(_array(fc1.weight), 1, width), _array(fc1.bias))
    _set_linear(spec.linear_1, _pad(_array(fc2.weight), 0, width), _pad(_array(fc2.bias), 0, width))
    _set_norm(spec.layer_norm, layer.final_layer_norm, width)


def exported_width(model: torch.nn.Module, side: str) -> int:
    """Residual width of ``side`` in the export: the kept width, or the original
    one for an unweighted LayerNorm over a pruned stream (see module doc)."""
    stack = getattr(model.spec, side)
    if model.spec.layernorm == "unweighted" and stack.norm_width > stack.embed_dim:
        return stack.norm_width
    return stack.embed_dim


def _heads(stack_module: torch.nn.Module, side: str) -> int:
    counts = {a.heads for layer in stack_module.layers for a in (layer.self_attn, getattr(layer, "encoder_attn", None)) if a is not None}
    if len(counts) != 1:
        raise ExportError(
            f"the {side}'s attention modules have different head counts {sorted(counts)}; "
            "CTranslate2 takes one head count per encoder or decoder"
        )
    return counts.pop()


def _input_layers(spec: Any, embeddings_spec: Any, embed: torch.nn.Module, width: int, padding_idx: int) -> None:
    embeddings_spec.weight = _pad(_array(embed.embed_tokens.weight), 1, width)
    spec.scale_embeddings = float(embed.embed_scale)
    spec.position_encodings.encodings = _pad(_array(embed.positions[padding_idx + 1 :]), 1, width)


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` without connectivity parameters (a sliced copy if it has them)."""
    if not model.spec.gated:
        return model
    try:
        return remove_pruned(model)
    except RemovalError as e:
        raise ExportError(f"the model still carries connectivity parameters and cannot be sliced: {brief(e)}") from e


def build_spec(model: torch.nn.Module, src_symbols: Sequence[str], tgt_symbols: Sequence[str]):
    """The ``ctranslate2.specs.TransformerSpec`` of ``model`` with its vocabularies registered."""
    ctranslate2 = require_ctranslate2()
    specs = ctranslate2.specs
    model = plain_model(model)
    ms = model.spec
    if len(src_symbols) != ms.encoder.vocab_size or len(tgt_symbols) != ms.decoder.vocab_size:
        raise ExportError(
            f"vocabularies of {len(src_symbols)}/{len(tgt_symbols)} symbols for a model with "
            f"{ms.encoder.vocab_size}/{ms.decoder.vocab_size} embeddings"
        )
    relu = specs.common_spec.Activation.RELU
    enc_w, dec_w = exported_width(model, "encoder"), exported_width(model, "decoder")
    encoder = specs.TransformerEncoderSpec(ms.encoder.depth, _heads(model.encoder, "encoder"), pre_norm=False, activation=relu)
    decoder = specs.TransformerDecoderSpec(ms.decoder.depth, _heads(model.decoder, "decoder"), pre_norm=False, activation=relu)

    _input_layers(encoder, encoder.embeddings[0], model.encoder.embed, enc_w, ms.padding_idx)
    for depth, idx in enumerate(ms.encoder.layer_order):
        layer, ls = model.encoder.layers[idx], encoder.layer[depth]
        ls.self_attention = _attention(specs, layer.self_attn, model.encoder.roles[depth], enc_w, enc_w, True)
        _set_norm(ls.self_attention.layer_norm, layer.self_attn_layer_norm, enc_w)
        _ffn(ls.ffn, layer, enc_w)

    _input_layers(decoder, decoder.embeddings, model.decoder.embed, dec_w, ms.padding_idx)
    _set_linear(decoder.projection, _pad(_array(model.decoder.output_weight()), 1, dec_w), None)
    for depth, idx in enumerate(ms.decoder.layer_order):
        layer, ls = model.decoder.layers[idx], decoder.layer[depth]
        ls.self_attention = _attention(specs, layer.self_attn, "qkv", dec_w, dec_w, True)
        _set_norm(ls.self_attention.layer_norm, layer.self_attn_layer_norm, dec_w)
        ls.attention = _attention(specs, layer.encoder_attn, "qkv", dec_w, enc_w, False)
        _set_norm(ls.attention.layer_norm, layer.encoder_attn_layer_norm, dec_w)
        _ffn(ls.ffn, layer, dec_w)

    spec = specs.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    # fairseq conventions: decoding starts from </s>, and every source ends with one.
    spec.config.decoder_start_token = "</s>"
    spec.config.add_source_eos = True
    spec.register_source_vocabulary(ct2_vocabulary(src_symbols))
    spec.register_target_vocabulary(ct2_vocabulary(tgt_symbols))
    return spec


def layout(model: torch.nn.Module) -> dict[str, Any]:
    """How the model was laid out for the engine (stored next to the weights)."""
    model = plain_model(model)
    ms = model.spec
    out: dict[str, Any] = {"max_positions": ms.max_positions, "layernorm": ms.layernorm}
    for side in ("encoder", "decoder"):
        stack, module = getattr(ms, side), getattr(model, side)
        attns = []
        for idx in stack.layer_order:
            layer = module.layers[idx]
            for a in (layer.self_attn, getattr(layer, "encoder_attn", None)):
                if a is not None:
                    attns.append({"qk": a.qk_dim, "vo": a.vo_dim, "head_dim": max(a.qk_dim, a.vo_dim), "scale_dim": round(a.scaling**-2)})
        out[side] = {
            "layers": stack.depth,
            "physical_layers": len(stack.layers),
            "residual_width": stack.embed_dim,
            "exported_width": exported_width(model, side),
            "embed_scale_dim": stack.embed_scale_dim,
            "ffn_dims": [stack.layers[i].ffn_dim for i in stack.layer_order],
            "attention": attns,
            "zero_padded_heads": sum(a["qk"] != a["vo"] for a in attns),
        }
    return out


def convert(
    model: torch.nn.Module,
    src_symbols: Sequence[str],
    tgt_symbols: Sequence[str],
    output_dir: str | Path,
    quantization: str = "float32",
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """Write ``model`` as a CTranslate2 model folder (replacing ``output_dir``).

    ``quantization`` (one of :data:`QUANTIZATIONS`) is applied to the weights
    as they are written. ``extra`` is stored with the layout in
    ``pet_layout.json`` (e.g. pet's decoding settings), which
    :class:`pet.export.translator.CT2Translator` reads for its defaults.
    The folder is written next to ``output_dir`` and renamed into place, so a
    failed export never leaves half a model behind.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization {quantization!r} is not supported; choose one of: {', '.join(QUANTIZATIONS)}")
    model = plain_model(model)
    spec = build_spec(model, src_symbols, tgt_symbols)
    try:
        spec.validate()
        spec.optimize(quantization=quantization)
    except ValueError as e:
        raise ExportError(f"CTranslate2 rejected the converted model: {brief(e)}") from e
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        spec.save(str(tmp))
        info = {"quantization": quantization, **layout(model), **(extra or {})}
        (tmp / LAYOUT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp.rename(output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return output_dir


def folder_bytes(folder: str | Path) -> int:
    """Bytes on disk of the files in ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
