"""FLOPs per token, measured while the model runs as translation runs it.

The counts come from ``torch.utils.flop_counter.FlopCounterMode``: matrix
products only (a multiply-add is 2 FLOPs; biases, softmax, LayerNorm and other
element-wise work are not counted, the usual convention). Nothing is estimated
from shapes, so a pruned model with uneven FFN widths, q/k heads narrower than
v/o heads or reused layers is counted exactly as it computes.

Two defects of the original research code's counter are avoided by
construction, because the decoder is measured the way incremental decoding
runs it:

* the decoder runs one step at a time with a key/value cache, so step t costs
  its projections plus attention over the t cached keys — not a re-run of the
  whole prefix;
* cross-attention keys/values are projected from the encoder output (its own
  width) once per sentence, at the first step, and reused; their cost is
  amortised over the target length.

SDPA on CPU: ``FlopCounterMode`` has formulas for the CUDA SDPA kernels
(``aten._scaled_dot_product_{flash,efficient,cudnn}_attention``) and counts the
math fallback through its ``bmm`` calls, but not the CPU flash kernel
``aten._scaled_dot_product_flash_attention_for_cpu``, which PyTorch picks on CPU
whenever q/k and v have the same head size. Without a fix, attention scores
silently count as 0 for a plain model and as non-zero for a pruned one whose
q/k and v/o sizes differ. :func:`flop_counter` registers that kernel (and its
backward) with the same formula the CUDA kernels use.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from pet.analysis.params import format_count

try:  # private helpers; the fallback formulas below are the same.
    from torch.utils.flop_counter import sdpa_backward_flop_count as _sdpa_bwd_count
    from torch.utils.flop_counter import sdpa_flop_count as _sdpa_count
except ImportError:  # pragma: no cover - older/newer torch
    _sdpa_count = _sdpa_bwd_count = None

PAD, EOS = 1, 2
FIRST_REAL_TOKEN = 4  # after <s>, <pad>, </s>, <unk>


def _sdpa_forward_flops(query_shape, key_shape, value_shape) -> int:
    if _sdpa_count is not None:
        return _sdpa_count(query_shape, key_shape, value_shape)
    b, h, sq, dq = query_shape
    sk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * sq * sk * dq + 2 * b * h * sq * sk * dv


def _cpu_flash_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return _sdpa_forward_flops(query_shape, key_shape, value_shape)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    if _sdpa_bwd_count is not None:
        return _sdpa_bwd_count(grad_out_shape, query_shape, key_shape, value_shape)
    return 2 * _sdpa_forward_flops(query_shape, key_shape, value_shape)


def _cpu_sdpa_mapping() -> dict[Any, Any]:
    aten = torch.ops.aten
    mapping: dict[Any, Any] = {}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_forward),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_flash_backward),
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = formula
    return mapping


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts CPU flash attention."""
    return FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping())


class _Attribution:
    """Splits a counter's running total among labelled regions (exclusive).

    Forward hooks push a label when a module starts and pop it when it ends;
    FLOPs counted between two events go to the label on top of the stack. A
    module shared by several owners (PET's shared query projection) gets one
    pair of hooks and is labelled by whichever attention is running it.
    """

    def __init__(self, counter: FlopCounterMode):
        self.counter = counter
        self.stack: list[tuple[str, Optional[nn.Module]]] = [("unattributed", None)]
        self.mark = 0
        self.totals: dict[str, int] = defaultdict(int)
        self.handles: list[Any] = []

    def _flush(self) -> None:
        now = self.counter.get_total_flops()
        self.totals[self.stack[-1][0]] += now - self.mark
        self.mark = now

    def push(self, label: str, module: Optional[nn.Module]) -> None:
        self._flush()
        self.stack.append((label, module))

    def pop(self) -> None:
        self._flush()
        self.stack.pop()

    def region(self, module: nn.Module, label: str) -> None:
        self.handles.append(module.register_forward_pre_hook(lambda m, a: self.push(label, m)))
        self.handles.append(module.register_forward_hook(lambda m, a, o: self.pop()))

    def projection(self, linear: nn.Module) -> None:
        def enter(m: nn.Module, args: Any) -> None:
            label, owner = self.stack[-1]
            base = label.rsplit(".", 1)[0]  # "decoder.cross_attn.scores" -> "decoder.cross_attn"
            if base.endswith("cross_attn") and owner is not None and (m is owner.k_proj or m is owner.v_proj):
                self.push(base + ".kv_proj", m)
            elif base.endswith("cross_attn"):
                self.push(base + ".q_out_proj", m)
            else:
                self.push(base + ".proj", m)

        self.handles.append(linear.register_forward_pre_hook(enter))
        self.handles.append(linear.register_forward_hook(lambda m, a, o: self.pop()))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _attach(model: nn.Module, attribution: _Attribution) -> None:
    """Label every region of an encoder-decoder Transformer."""
    attribution.region(model.encoder, "encoder.other")
    # The decoder's only matrix product outside its layers is the output projection.
    attribution.region(model.decoder, "decoder.output_projection")
    seen: set[int] = set()
    for side in ("encoder", "decoder"):
        for layer in getattr(model, side).layers:
            for attr, kind in (("self_attn", "self_attn"), ("encoder_attn", "cross_attn")):
                att = getattr(layer, attr, None)
                if att is None:
                    continue
                attribution.region(att, f"{side}.{kind}.scores")
                for proj in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
                    if id(proj) not in seen:
                        seen.add(id(proj))
                        attribution.projection(proj)
            attribution.region(layer.ffn, f"{side}.ffn")


_REGION_ORDER = [
    "encoder.self_attn.proj",
    "encoder.self_attn.scores",
    "encoder.ffn",
    "encoder.other",
    "decoder.self_attn.proj",
    "decoder.self_attn.scores",
    "decoder.cross_attn.q_out_proj",
    "decoder.cross_attn.kv_proj",
    "decoder.cross_attn.scores",
    "decoder.ffn",
    "decoder.output_projection",
]


def _region_rank(label: str) -> tuple[int, str]:
    return (_REGION_ORDER.index(label) if label in _REGION_ORDER else len(_REGION_ORDER), label)


@dataclass
class FlopsReport:
    """FLOPs to translate one sentence of ``src_len`` tokens into ``tgt_len``.

    ``decoder_step_flops[t]`` is the cost of decoding step t+1 (all beam
    hypotheses); step 1 includes the cross-attention key/value projections.
    ``breakdown`` maps a region to its FLOPs for the whole sentence:
    ``*.proj`` the attention projections, ``*.scores`` the attention itself
    (QKᵀ and AV), ``decoder.cross_attn.kv_proj`` the once-per-sentence
    cross-attention key/value projections, ``decoder.output_projection`` the
    vocabulary projection at every step.
    """

    src_len: int
    tgt_len: int
    beam: int
    encoder_flops: int
    decoder_flops: int
    decoder_step_flops: list[int]
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def encoder_per_src_token(self) -> float:
        return self.encoder_flops / self.src_len

    @property
    def decoder_per_tgt_token(self) -> float:
        return self.decoder_flops / self.tgt_len

    @property
    def total_flops(self) -> int:
        return self.encoder_flops + self.decoder_flops

    @property
    def total_per_tgt_token(self) -> float:
        """Encoder + decoder FLOPs for the sentence, per target token."""
        return self.total_flops / self.tgt_len

    def per_token_breakdown(self) -> dict[str, float]:
        """Encoder regions per source token, decoder regions per target token."""
        return {
            k: v / (self.src_len if k.startswith("encoder") else self.tgt_len) for k, v in self.breakdown.items()
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            encoder_per_src_token=self.encoder_per_src_token,
            decoder_per_tgt_token=self.decoder_per_tgt_token,
            total_flops=self.total_flops,
            total_per_tgt_token=self.total_per_tgt_token,
            per_token_breakdown=self.per_token_breakdown(),
        )
        return d


def synthetic_source(length: int, vocab_size: int, seed: int = 0, eos: int = EOS) -> Tensor:
    """(1, length) random real tokens ending with </s>."""
    g = torch.Generator().manual_seed(seed)
    low = min(FIRST_REAL_TOKEN, vocab_size - 1)
    src = torch.randint(low, vocab_size, (1, length), generator=g)
    src[0, -1] = eos
    return src


@torch.no_grad()
def count_flops(
    model: nn.Module,
    src_len: int = 25,
    tgt_len: int = 25,
    beam: int = 1,
    src_tokens: Optional[Tensor] = None,
    eos: int = EOS,
) -> FlopsReport:
    """Count the FLOPs of translating one sentence, as incremental decoding runs.

    The encoder runs once over ``src_len`` tokens (``src_tokens`` (1, S) or (S,)
    overrides the synthetic sentence; FLOPs do not depend on token values).
    The decoder then runs ``tgt_len`` steps with a cache, starting from </s>.
    With ``beam`` > 1 it follows ``pet.generation.beam_search.BeamSearch``: the
    first step runs on one row (so cross-attention keys/values are projected
    once per sentence), then the state is expanded to ``beam`` rows and
    reordered every step (which costs no FLOPs). Batch size is 1: the
    numbers are per sentence.
    """
    was_training = model.training
    model.eval()
    spec = model.spec
    if src_tokens is None:
        src_tokens = synthetic_source(src_len, spec.encoder.vocab_size, eos=eos)
    if src_tokens.dim() == 1:
        src_tokens = src_tokens.unsqueeze(0)
    if src_tokens.size(0) != 1:
        raise ValueError(f"count_flops measures one sentence; got a batch of {src_tokens.size(0)}")
    src_len = int(src_tokens.size(1))
    device = next(model.parameters()).device
    src_tokens = src_tokens.to(device)
    tgt_vocab = spec.decoder.vocab_size
    g = torch.Generator().manual_seed(1)

    counter = flop_counter()
    attribution = _Attribution(counter)
    _attach(model, attribution)
    try:
        with counter:
            encoder_out = model.encoder(src_tokens)
            encoder_flops = counter.get_total_flops()
            tokens = torch.full((1, 1), eos, dtype=torch.long, device=device)
            cache: dict = {}
            steps: list[int] = []
            for _step in range(tgt_len):
                before = counter.get_total_flops()
                model.decoder(tokens, encoder_out, cache=cache)
                steps.append(counter.get_total_flops() - before)
                rows = tokens.size(0)
                if beam > 1:
                    # Step 0 ran on one row; then every hypothesis extends a
                    # (here random) row, as beam search reorders its state.
                    order = torch.randint(rows, (beam,), generator=g).to(device)
                    type(model).reorder_cache(cache, order)  # cross-attention stays per sentence
                    tokens = tokens.index_select(0, order)
                # The next token does not change the cost; avoid special ids.
                nxt = torch.randint(min(FIRST_REAL_TOKEN, tgt_vocab - 1), tgt_vocab, (tokens.size(0), 1), generator=g)
                tokens = torch.cat([tokens, nxt.to(device)], dim=1)
    finally:
        attribution.remove()
        model.train(was_training)

    breakdown = {k: v for k, v in sorted(attribution.totals.items(), key=lambda kv: _region_rank(kv[0])) if v}
    return FlopsReport(
        src_len=src_len,
        tgt_len=tgt_len,
        beam=beam,
        encoder_flops=int(encoder_flops),
        decoder_flops=int(sum(steps)),
        decoder_step_flops=[int(s) for s in steps],
        breakdown=breakdown,
    )


def format_flops(report: FlopsReport) -> str:
    """Plain-text FLOPs report: totals and per-region breakdown per token."""
    r = report
    search = "greedy decoding (beam 1)" if r.beam == 1 else f"beam {r.beam}, all hypotheses counted"
    lines = [
        f"FLOPs (matrix products, multiply-add = 2) for one sentence: {r.src_len} source -> {r.tgt_len} target tokens, "
        f"{search}",
        f"  encoder per source token   {format_count(r.encoder_per_src_token):>10}",
        f"  decoder per target token   {format_count(r.decoder_per_tgt_token):>10}"
        f"   (step 1 {format_count(r.decoder_step_flops[0])}, step {r.tgt_len} {format_count(r.decoder_step_flops[-1])})",
        f"  total per target token     {format_count(r.total_per_tgt_token):>10}   (encoder + decoder, per sentence / "
        f"{r.tgt_len}, beam {r.beam})",
        f"  total per sentence         {format_count(r.total_flops):>10}",
        "  breakdown (encoder per source token, decoder per target token):",
    ]
    per_tok = r.per_token_breakdown()
    width = max((len(k) for k in per_tok), default=10)
    for side, total in (("encoder", r.encoder_flops), ("decoder", r.decoder_flops)):
        for k, v in per_tok.items():
            if k.startswith(side):
                share = 100.0 * r.breakdown[k] / total if total else 0.0
                lines.append(f"    {k:<{width}}  {format_count(v):>10}  {share:5.1f}% of {side}")
    return "\n".join(lines)
