"""Plain <-> gated models, and which weights each connectivity parameter owns.

Everything SRP does is phrased in *gate groups*: one group per connectivity
buffer (``encoder.embed.c_emb``, ``decoder.layers.0.encoder_attn.c_qk``, ...).
A group's *units* are the entries of its buffer. Each unit owns rows or
columns of weight matrices: an embedding dimension owns a column of every
matrix that reads the residual stream and a row of every matrix that writes
it (plus LayerNorm entries and the embedding column); a q/k dimension owns a
row of ``q_proj`` and ``k_proj``; a v/o dimension a row of ``v_proj`` and a
column of ``out_proj``; an FFN neuron a row of ``fc1`` and a column of ``fc2``.

:func:`dim_ownership` builds that map once, from the module structure, and
the three places that need it read the same table, so they cannot disagree:
the parameter count of the rate solver (:mod:`pet.pruning.rate`), the
freezing hook (:mod:`pet.pruning.shrink`) and physical removal
(:mod:`pet.pruning.removal`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from pet.errors import CheckpointError, ConfigError
from pet.models.spec import TransformerSpec
from pet.models.transformer import Attention, FeedForward, StreamNorm, TransformerModel

KINDS = ("emb", "qk", "vo", "fc")
# pruning.targets -> the kinds of gate group a stage prunes.
TARGET_KINDS: dict[str, tuple[str, ...]] = {
    "emb": ("emb",),
    "heads_ffn": ("qk", "vo", "fc"),
    "all": ("emb", "qk", "vo", "fc"),
}
BUFFER_NAMES = ("c_emb", "c_qk", "c_vo", "c_fc")


@dataclass(frozen=True)
class GateGroup:
    """One connectivity buffer and how its units may be pruned."""

    name: str  # state-dict name of the buffer (whether or not the model is gated)
    kind: str  # emb | qk | vo | fc
    side: str  # encoder | decoder
    size: int
    heads: int = 1  # qk/vo: units are pruned in equal numbers per head

    @property
    def head_dim(self) -> int:
        return self.size // self.heads

    @property
    def target(self) -> str:
        return "emb" if self.kind == "emb" else "heads_ffn"


# ----------------------------------------------------------- plain <-> gated


def gated_spec(spec: TransformerSpec, layernorm: Optional[str] = None) -> TransformerSpec:
    """A deep copy of ``spec`` with connectivity buffers.

    The LayerNorm mode may only change while the stream is at its original
    width: there, weighted and unweighted LayerNorm compute the same thing
    with c = 1. On an already pruned stream (``norm_width`` > width) they
    differ, so switching would change the model's outputs.
    """
    new = TransformerSpec.from_dict(copy.deepcopy(spec.to_dict()))
    new.gated = True
    if layernorm is not None and layernorm != spec.layernorm:
        pruned = [s for s, st in (("encoder", spec.encoder), ("decoder", spec.decoder)) if st.norm_width != st.embed_dim]
        if pruned:
            raise ConfigError(
                f"pruning.layernorm={layernorm} but the input model's {' and '.join(pruned)} stream was already "
                f"pruned with {spec.layernorm} LayerNorm; use pruning.layernorm={spec.layernorm} for every stage of a chain"
            )
        new.layernorm = layernorm
    return new


def load_plain_state(gated: TransformerModel, state_dict: dict[str, Tensor]) -> None:
    """Load a plain model's weights into a gated model of the same shape.

    Non-strict only for what a plain checkpoint cannot have: the connectivity
    buffers (left at their initial 1). Any other missing or unexpected key is
    a shape mismatch and raises.
    """
    missing, unexpected = gated.load_state_dict(state_dict, strict=False)
    other = [k for k in missing if k.rsplit(".", 1)[-1] not in BUFFER_NAMES]
    if other or unexpected:
        raise CheckpointError(
            f"plain weights do not fit the gated model: missing {other[:5]}, unexpected {list(unexpected)[:5]}"
        )


def to_gated(model: TransformerModel, layernorm: Optional[str] = None) -> TransformerModel:
    """The pruning-safe copy of a plain model: same weights, all c = 1."""
    if model.spec.gated:
        raise CheckpointError(
            "the input model is already gated (a mid-pruning checkpoint); start from a plain or "
            "physically pruned checkpoint (a prune run's checkpoint_pruned.pt)"
        )
    gated = TransformerModel(gated_spec(model.spec, layernorm))
    load_plain_state(gated, model.state_dict())
    return gated.to(next(model.parameters()).device)


# --------------------------------------------------------------- gate groups


def _attention_modules(model: TransformerModel) -> list[tuple[str, str, Attention]]:
    """(prefix, side, module) of every physical attention module."""
    out = []
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            out.append((f"{side}.layers.{i}.self_attn", side, layer.self_attn))
            if side == "decoder":
                out.append((f"{side}.layers.{i}.encoder_attn", side, layer.encoder_attn))
    return out


def gate_groups(model: TransformerModel) -> list[GateGroup]:
    """Every gate group of the model's structure, in a fixed order.

    Defined by the modules, so it works on plain models too (used to count
    parameters); the buffers themselves exist only when ``spec.gated``.
    """
    groups = [
        GateGroup("encoder.embed.c_emb", "emb", "encoder", model.encoder.embed.embed_tokens.embedding_dim),
        GateGroup("decoder.embed.c_emb", "emb", "decoder", model.decoder.embed.embed_tokens.embedding_dim),
    ]
    for prefix, side, att in _attention_modules(model):
        groups.append(GateGroup(f"{prefix}.c_qk", "qk", side, att.heads * att.qk_dim, att.heads))
        groups.append(GateGroup(f"{prefix}.c_vo", "vo", side, att.heads * att.vo_dim, att.heads))
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            groups.append(GateGroup(f"{side}.layers.{i}.ffn.c_fc", "fc", side, layer.ffn.fc1.out_features))
    return groups


def groups_for(model: TransformerModel, targets: str) -> list[GateGroup]:
    kinds = TARGET_KINDS[targets]
    return [g for g in gate_groups(model) if g.kind in kinds]


def gate_buffer(model: TransformerModel, group: GateGroup | str) -> Tensor:
    name = group.name if isinstance(group, GateGroup) else group
    return model.get_buffer(name)


@torch.no_grad()
def set_gates(model: TransformerModel, selection: Mapping[str, Sequence[int] | Tensor], value: float) -> None:
    """c = ``value`` for every selected unit: the one place a selection touches the
    connectivity parameters (shrinking steps, one-shot removal, its ablations)."""
    for name, idx in selection.items():
        if len(idx):
            c = gate_buffer(model, name)
            c[torch.as_tensor(idx, dtype=torch.long, device=c.device)] = value


# ------------------------------------------------------------- ownership map


@dataclass
class DimOwnership:
    """Which gate group owns each dimension of each parameter.

    ``owners[name][d]`` is the group whose units index dimension ``d`` of the
    parameter (None: a dimension pruning never touches, such as the
    vocabulary). Shared tensors appear once, under their first name;
    ``aliases`` maps their other state-dict names to it.
    """

    params: dict[str, nn.Parameter] = field(default_factory=dict)
    owners: dict[str, list[Optional[str]]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    unprunable: dict[str, str] = field(default_factory=dict)  # group -> why

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)


def dim_ownership(model: TransformerModel) -> DimOwnership:
    own = DimOwnership()
    names: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in names:
            own.aliases[name] = names[id(p)]
        else:
            names[id(p)] = name
            own.params[name] = p
            own.owners[name] = [None] * p.dim()

    def mark(p: nn.Parameter, dim: int, group: str) -> None:
        name = names[id(p)]
        current = own.owners[name][dim]
        if current is not None and current != group:
            # A tensor shared by two groups (PET's shared query projection):
            # pruning either would change the other.
            reason = f"{name} is shared with {current}"
            own.unprunable.setdefault(group, reason)
            own.unprunable.setdefault(current, f"{name} is shared with {group}")
            return
        own.owners[name][dim] = group

    def attention(att: Attention, prefix: str, q_in: str, kv_in: str, out: str) -> None:
        qk, vo = f"{prefix}.c_qk", f"{prefix}.c_vo"
        for proj, rows, cols in ((att.q_proj, qk, q_in), (att.k_proj, qk, kv_in), (att.v_proj, vo, kv_in)):
            mark(proj.weight, 0, rows)
            mark(proj.bias, 0, rows)
            mark(proj.weight, 1, cols)
        mark(att.out_proj.weight, 0, out)
        mark(att.out_proj.bias, 0, out)
        mark(att.out_proj.weight, 1, vo)

    def norm(ln: StreamNorm, stream: str) -> None:
        mark(ln.weight, 0, stream)
        mark(ln.bias, 0, stream)

    def ffn(f: FeedForward, prefix: str, stream: str) -> None:
        fc = f"{prefix}.c_fc"
        mark(f.fc1.weight, 0, fc)
        mark(f.fc1.bias, 0, fc)
        mark(f.fc1.weight, 1, stream)
        mark(f.fc2.weight, 0, stream)
        mark(f.fc2.bias, 0, stream)
        mark(f.fc2.weight, 1, fc)

    enc_stream, dec_stream = "encoder.embed.c_emb", "decoder.embed.c_emb"
    enc, dec = model.encoder, model.decoder
    mark(enc.embed.embed_tokens.weight, 1, enc_stream)
    roles = list(enc.roles)
    for i, layer in enumerate(enc.layers):
        prefix = f"encoder.layers.{i}"
        attention(layer.self_attn, f"{prefix}.self_attn", enc_stream, enc_stream, enc_stream)
        used_roles = {roles[d] for d, idx in enumerate(enc.spec.layer_order) if idx == i}
        if used_roles - {"qkv"}:
            # With permuted roles a stored matrix computes queries at one depth
            # and keys or values at another: its rows belong to no single group.
            for kind in ("c_qk", "c_vo"):
                own.unprunable[f"{prefix}.self_attn.{kind}"] = f"layer {i} is reused with permuted attention roles {sorted(used_roles)}"
        norm(layer.self_attn_layer_norm, enc_stream)
        ffn(layer.ffn, f"{prefix}.ffn", enc_stream)
        norm(layer.final_layer_norm, enc_stream)
    mark(dec.embed.embed_tokens.weight, 1, dec_stream)
    if dec.output_projection is not None:
        mark(dec.output_projection.weight, 1, dec_stream)
    for i, layer in enumerate(dec.layers):
        prefix = f"decoder.layers.{i}"
        attention(layer.self_attn, f"{prefix}.self_attn", dec_stream, dec_stream, dec_stream)
        norm(layer.self_attn_layer_norm, dec_stream)
        attention(layer.encoder_attn, f"{prefix}.encoder_attn", dec_stream, enc_stream, dec_stream)
        norm(layer.encoder_attn_layer_norm, dec_stream)
        ffn(layer.ffn, f"{prefix}.ffn", dec_stream)
        norm(layer.final_layer_norm, dec_stream)
    return own


def check_prunable(own: DimOwnership, groups: list[GateGroup]) -> None:
    bad = {g.name: own.unprunable[g.name] for g in groups if g.name in own.unprunable}
    if bad:
        name, why = next(iter(bad.items()))
        raise ConfigError(
            f"cannot prune {name} ({why}) nor {len(bad) - 1} other group(s) of this model; "
            "prune such a model with pruning.targets=emb only"
        )


def meta_model(spec: TransformerSpec | dict) -> TransformerModel:
    """A weightless model of ``spec`` (meta device): structure and shapes only."""
    if isinstance(spec, dict):
        spec = TransformerSpec.from_dict(spec)
    with torch.device("meta"):
        return TransformerModel(spec)
