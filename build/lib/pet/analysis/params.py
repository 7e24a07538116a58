"""Parameters per component, each tensor counted once.

PET models reuse physical layers at several depths (the layer is registered
once, so its tensors appear once) and share the decoder's query projection
between self- and cross-attention (one ``nn.Linear`` registered under two
names). A tied output projection is the decoder embedding itself. In every
case a tensor is attributed to the first component that registers it, and the
components that reuse it say "shared" instead of counting it again, so the
rows always sum to ``model.num_parameters()``.

Connectivity parameters (SRP's ``c_*``) are buffers, not parameters, and are
not counted: a sliced model has none.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class ParamRow(NamedTuple):
    component: str
    count: int
    note: str = ""


_SUBMODULE_KIND = {"self_attn": "self_attn", "encoder_attn": "cross_attn", "ffn": "ffn"}


def _component(name: str, per_layer: bool) -> str:
    """Component of a parameter name such as ``decoder.layers.3.encoder_attn.k_proj.weight``."""
    parts = name.split(".")
    side = parts[0]
    if len(parts) >= 3 and parts[1] == "embed" and parts[2] == "embed_tokens":
        return f"{side}.embed_tokens"
    if len(parts) >= 4 and parts[1] == "layers":
        sub = parts[3]
        kind = _SUBMODULE_KIND.get(sub) or ("layernorm" if sub.endswith("layer_norm") else sub)
        return f"{side}.layers.{parts[2]}.{kind}" if per_layer else f"{side}.{kind}"
    if len(parts) >= 2 and parts[1] == "output_projection":
        return f"{side}.output_projection"
    # Unknown parameter (a future module): name it by its owning module.
    return ".".join(parts[:-1]) or name


def _reuse_notes(model: nn.Module, per_layer: bool) -> dict[str, str]:
    """Notes on physical layers used at several depths (PET)."""
    notes: dict[str, str] = {}
    for side in ("encoder", "decoder"):
        stack = getattr(model, side, None)
        spec = getattr(stack, "spec", None)
        order = list(getattr(spec, "layer_order", []) or [])
        n_layers = len(getattr(stack, "layers", []) or [])
        if not order or len(order) == n_layers and order == list(range(n_layers)):
            continue
        if per_layer:
            for idx in range(n_layers):
                depths = [d for d, i in enumerate(order) if i == idx]
                notes[f"{side}.layers.{idx}.self_attn"] = f"layer used at depths {depths}"
        else:
            notes[f"{side}.self_attn"] = f"{n_layers} physical layers at {len(order)} depths, order {order}"
    return notes


def parameter_breakdown(model: nn.Module, per_layer: bool = False) -> tuple[list[ParamRow], int]:
    """Rows ``(component, count, note)`` and the total number of parameters.

    Components: ``encoder.embed_tokens``, ``encoder.self_attn``, ``encoder.ffn``,
    ``encoder.layernorm``, the same for the decoder plus ``decoder.cross_attn``,
    and ``decoder.output_projection`` (0 when tied to the decoder embedding).
    With ``per_layer`` the layer components are split per physical layer
    (``encoder.layers.0.ffn``, ...), which shows a pruned model's uneven widths.
    The total equals ``sum(p.numel() for p in model.parameters())``.
    """
    counts: dict[str, int] = {}
    shared: dict[str, list[str]] = {}
    owner: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        comp = _component(name, per_layer)
        counts.setdefault(comp, 0)
        first = owner.get(id(p))
        if first is None:
            owner[id(p)] = comp
            counts[comp] += p.numel()
        else:
            # Second registration of the same tensor: count it where it first appeared.
            label = f"{name.split('.', 1)[-1]} shared with {first}" if first != comp else f"{name} shared"
            shared.setdefault(comp, []).append(label)

    decoder = getattr(model, "decoder", None)
    if decoder is not None and hasattr(decoder, "output_projection") and decoder.output_projection is None:
        counts.setdefault("decoder.output_projection", 0)
        shared.setdefault("decoder.output_projection", []).append("tied to decoder.embed_tokens (shared)")

    notes = _reuse_notes(model, per_layer)
    for comp, labels in shared.items():
        # Collapse "layers.N.x.q_proj.weight shared with ..." into one phrase per kind.
        short = sorted({_shorten(label) for label in labels})
        notes[comp] = "; ".join(([notes[comp]] if comp in notes else []) + short)

    rows = [ParamRow(c, counts[c], notes.get(c, "")) for c in sorted(counts, key=_sort_key)]
    total = sum(r.count for r in rows)
    return rows, total


_KIND_RANK = {"self_attn": 0, "cross_attn": 1, "ffn": 2, "layernorm": 3}


def _sort_key(comp: str) -> tuple:
    """encoder before decoder; embeddings, layers (by index, then kind), output projection."""
    parts = comp.split(".")
    side = {"encoder": 0, "decoder": 1}.get(parts[0], 2)
    if parts[1:2] == ["embed_tokens"]:
        return (side, 0, 0, 0, comp)
    if parts[1:2] == ["layers"] and len(parts) == 4:
        return (side, 1, int(parts[2]), _KIND_RANK.get(parts[3], 9), comp)
    if len(parts) == 2 and parts[1] in _KIND_RANK:
        return (side, 1, -1, _KIND_RANK[parts[1]], comp)
    if parts[1:2] == ["output_projection"]:
        return (side, 2, 0, 0, comp)
    return (side, 3, 0, 0, comp)


def _shorten(label: str) -> str:
    # "layers.0.encoder_attn.q_proj.weight shared with decoder.self_attn"
    #   -> "q_proj shared with decoder.self_attn"
    head, sep, tail = label.partition(" shared")
    parts = head.split(".")
    if len(parts) >= 2 and parts[-1] in ("weight", "bias"):
        head = parts[-2]
    return head + sep + tail if sep else label


def format_count(n: float) -> str:
    """39469056 -> '39.47M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def format_table(rows: list[ParamRow] | list[tuple], total: int | None = None, title: str = "Parameters") -> str:
    """Plain-text table: component, count, share of the total, note."""
    rows = [ParamRow(*r) for r in rows]
    if total is None:
        total = sum(r.count for r in rows)
    header = ("component", "params", "%", "note")
    body = [
        (r.component, f"{r.count:,}", f"{100.0 * r.count / total:.2f}" if total else "-", r.note) for r in rows
    ]
    body.append(("total", f"{total:,}", "100.00" if total else "-", format_count(total)))
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(3)]
    def line(cells: tuple) -> str:
        return f"{cells[0]:<{widths[0]}}  {cells[1]:>{widths[1]}}  {cells[2]:>{widths[2]}}  {cells[3]}".rstrip()

    rendered = [line(header), *(line(r) for r in body)]
    rule = "-" * max(len(x) for x in rendered)
    lines = [title, rendered[0], rule, *rendered[1:-1], rule, rendered[-1]]
    return "\n".join(lines)
