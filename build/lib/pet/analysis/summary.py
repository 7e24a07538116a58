"""Size and cost of a model in one dict and one printable report.

``summarize(model)`` combines the model's shape, its parameter breakdown
(:mod:`pet.analysis.params`) and its FLOPs per token under incremental
decoding (:mod:`pet.analysis.flops`). The dict holds only plain JSON types, so
a recipe can log it or write it next to a checkpoint; :func:`format_summary`
turns it (or its JSON round trip) into text. Latency is separate
(:mod:`pet.analysis.latency`): it takes seconds to minutes and depends on the
machine, where everything here is exact and deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch import nn

from pet.analysis.flops import FlopsReport, count_flops, format_flops
from pet.analysis.params import ParamRow, format_count, format_table, parameter_breakdown


def _stack_shape(stack: Any) -> dict[str, Any]:
    layers = stack.layers
    attn = sorted({(l.self_attn.heads, l.self_attn.qk_dim, l.self_attn.vo_dim) for l in layers})
    out: dict[str, Any] = {
        "vocab_size": stack.vocab_size,
        "embed_dim": stack.embed_dim,
        "physical_layers": len(layers),
        "depth": len(stack.layer_order),
        "layer_order": list(stack.layer_order),
        "ffn_dims": [l.ffn_dim for l in layers],
        "self_attn_heads_qk_vo": [list(a) for a in attn],
    }
    cross = sorted({(l.cross_attn.heads, l.cross_attn.qk_dim, l.cross_attn.vo_dim) for l in layers if l.cross_attn})
    if cross:
        out["cross_attn_heads_qk_vo"] = [list(a) for a in cross]
    if stack.attention_roles:
        out["attention_roles"] = list(stack.attention_roles)
    if stack.share_query:
        out["share_query"] = True
    return out


def model_shape(model: nn.Module) -> dict[str, Any]:
    spec = model.spec
    return {
        "encoder": _stack_shape(spec.encoder),
        "decoder": _stack_shape(spec.decoder),
        "tied_output_embedding": bool(spec.share_decoder_input_output_embed),
        "gated": bool(spec.gated),
    }


def summarize(
    model: nn.Module,
    src_len: int = 25,
    tgt_len: int = 25,
    beam: int = 1,
    per_layer: bool = False,
    name: Optional[str] = None,
) -> dict[str, Any]:
    """Shape, parameters and FLOPs of ``model`` as a JSON-ready dict.

    FLOPs are for translating one sentence of ``src_len`` source tokens into
    ``tgt_len`` target tokens (both counting </s>; 25/25 is typical of IWSLT'14
    de-en), with ``beam`` hypotheses. Keys: ``name``, ``shape``, ``params``
    (``total``, ``breakdown`` rows), ``flops`` (:class:`FlopsReport` fields plus
    ``encoder_per_src_token``, ``decoder_per_tgt_token``, ``total_per_tgt_token``).
    """
    rows, total = parameter_breakdown(model, per_layer=per_layer)
    flops = count_flops(model, src_len=src_len, tgt_len=tgt_len, beam=beam)
    return {
        "name": name or type(model).__name__,
        "shape": model_shape(model),
        "params": {"total": total, "breakdown": [r._asdict() for r in rows]},
        "flops": flops.to_dict(),
    }


def _flops_from_dict(d: dict[str, Any]) -> FlopsReport:
    names = {f.name for f in dataclasses.fields(FlopsReport)}
    return FlopsReport(**{k: v for k, v in d.items() if k in names})


def _shape_line(side: str, s: dict[str, Any]) -> str:
    ffn = sorted(set(s["ffn_dims"]))
    ffn_txt = str(ffn[0]) if len(ffn) == 1 else f"{s['ffn_dims']}"
    attn = "; ".join(f"{h}x(qk {qk}, vo {vo})" for h, qk, vo in s["self_attn_heads_qk_vo"])
    reuse = "" if s["depth"] == s["physical_layers"] else f" ({s['physical_layers']} physical, order {s['layer_order']})"
    extra = ""
    if s.get("attention_roles"):
        extra += f", roles {s['attention_roles']}"
    if s.get("share_query"):
        extra += ", shared self/cross query"
    return (
        f"  {side}: {s['depth']} layers{reuse}, d {s['embed_dim']}, ffn {ffn_txt}, heads {attn},"
        f" vocab {s['vocab_size']}{extra}"
    )


def format_summary(summary: dict[str, Any]) -> str:
    """Printable report of a :func:`summarize` dict."""
    shape, params = summary["shape"], summary["params"]
    flops = _flops_from_dict(summary["flops"])
    lines = [
        f"Model summary: {summary.get('name', '')}".rstrip(),
        _shape_line("encoder", shape["encoder"]),
        _shape_line("decoder", shape["decoder"]),
        "",
        format_table([ParamRow(**r) for r in params["breakdown"]], params["total"]),
        "",
        format_flops(flops),
    ]
    return "\n".join(lines)


def compare(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Relative change (fraction, negative = smaller) of ``other`` vs ``base``."""

    def rel(a: float, b: float) -> float:
        return (b - a) / a if a else float("nan")

    fb, fo = base["flops"], other["flops"]
    return {
        "params": rel(base["params"]["total"], other["params"]["total"]),
        "encoder_per_src_token": rel(fb["encoder_per_src_token"], fo["encoder_per_src_token"]),
        "decoder_per_tgt_token": rel(fb["decoder_per_tgt_token"], fo["decoder_per_tgt_token"]),
        "total_per_tgt_token": rel(fb["total_per_tgt_token"], fo["total_per_tgt_token"]),
    }


def format_comparison(base: dict[str, Any], other: dict[str, Any]) -> str:
    change = compare(base, other)
    rows = [
        ("params", base["params"]["total"], other["params"]["total"]),
        ("encoder FLOPs / src token", base["flops"]["encoder_per_src_token"], other["flops"]["encoder_per_src_token"]),
        ("decoder FLOPs / tgt token", base["flops"]["decoder_per_tgt_token"], other["flops"]["decoder_per_tgt_token"]),
        ("total FLOPs / tgt token", base["flops"]["total_per_tgt_token"], other["flops"]["total_per_tgt_token"]),
    ]
    keys = ["params", "encoder_per_src_token", "decoder_per_tgt_token", "total_per_tgt_token"]
    names = (base.get("name") or "base", other.get("name") or "other")
    wa, wb = max(10, len(names[0])), max(10, len(names[1]))
    lines = [f"{'':<26}  {names[0]:>{wa}}  {names[1]:>{wb}}  {'change':>8}"]
    for (label, a, b), k in zip(rows, keys):
        lines.append(f"{label:<26}  {format_count(a):>{wa}}  {format_count(b):>{wb}}  {100 * change[k]:>+7.2f}%")
    return "\n".join(lines)
