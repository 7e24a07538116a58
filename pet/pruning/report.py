"""What pruning bought: size, FLOPs, measured latency and BLEU, before vs after.

A pruned model is only worth having if it is faster where it runs, so the
report puts three numbers side by side for each batch size:

* the **FLOP-ideal speedup**, FLOPs(before) / FLOPs(after), counted with
  ``torch.utils.flop_counter`` while the model decodes incrementally with beam
  ``beam`` (:func:`pet.analysis.flops.count_flops`);
* the **measured speedup**, time(before) / time(after), translating the same
  synthetic sentences with the same beam search and a fixed output length
  (:func:`pet.analysis.latency.latency_sweep`), so both models do identical
  work and only the per-step cost differs;
* their ratio (how much of the ideal the dense, physically smaller model
  actually realises).

Both use source length = target length = ``length`` so the FLOPs describe
exactly the work that is timed.

With ``pruning.report_engines`` (:func:`engines_enabled`) both models are also
exported to CTranslate2 (float32 and int8) and timed there, in the same
interleaved rounds as pet's eager loop (:func:`pet.export.speed.compare_engines`):
a pruned model's worth is its speed in the engine it ships in, where pet's
per-step overheads are gone. The report then shows each engine's sentences/s
before and after, its measured speedup and that speedup's share of the
FLOP-ideal one, and the folders' sizes on disk.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from pet.analysis.flops import count_flops
from pet.analysis.latency import make_batches, measure_latency, synthetic_sentences
from pet.checkpoint import model_from_checkpoint
from pet.data.fileio import atomic_write_text
from pet.export.ctranslate2 import require_ctranslate2
from pet.export.speed import ENGINES, INSTALL_HINT, SPEEDUP_ABOVE_IDEAL, compare_engines, ct2_available, engine_table
from pet.generation.translate import translate_dataset
from pet.models.spec import TransformerSpec
from pet.models.transformer import TransformerModel

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    parameters: int
    flops_per_sentence: int  # encoder + decoder, beam ``beam``
    flops_per_tgt_token: float
    ms_per_sentence: dict[int, float] = field(default_factory=dict)  # batch size -> ms
    bleu: Optional[float] = None
    bleu_sentences: int = 0
    beam: int = 5  # what the FLOPs and timings count: beam hypotheses, length -> length tokens
    length: int = 25


def measure(
    model: nn.Module,
    *,
    beam: int = 5,
    length: int = 25,
    bleu_fn: Optional[Callable[[nn.Module], tuple[float, int]]] = None,
) -> Measurement:
    """Parameters, FLOPs of translating one ``length``-token sentence into
    ``length`` tokens with beam ``beam``, and BLEU if ``bleu_fn`` is given.
    Latency is :func:`paired_latency` (measured for several models at once)."""
    model.eval()
    flops = count_flops(model, src_len=length, tgt_len=length, beam=beam)
    m = Measurement(
        parameters=sum(p.numel() for p in model.parameters()),
        flops_per_sentence=flops.total_flops,
        flops_per_tgt_token=flops.total_per_tgt_token,
        beam=beam,
        length=length,
    )
    if bleu_fn is not None:
        m.bleu, m.bleu_sentences = bleu_fn(model)
    return m


def paired_latency(
    models: Sequence[nn.Module],
    *,
    beam: int = 5,
    length: int = 25,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 3,
    threads: int = 0,
    seed: int = 0,
) -> list[dict[int, float]]:
    """Milliseconds per sentence of each model at each batch size, interleaved.

    Each round times every model once on the same synthetic sentences (8 at
    batch 1, one full batch otherwise), decoding exactly ``length`` steps with
    beam ``beam``; the median over ``repeats`` rounds is reported. Interleaving
    makes a change in machine load hit all models alike, so their ratio (the
    speedup) stays meaningful on a shared machine.
    """
    vocab = min(m.spec.encoder.vocab_size for m in models)
    out: list[dict[int, float]] = [{} for _ in models]
    for bs in batch_sizes:
        batches = make_batches(synthetic_sentences(8 if bs == 1 else bs, length, vocab, seed=seed), bs)
        times: list[list[float]] = [[] for _ in models]
        for r in range(repeats):
            for i, m in enumerate(models):
                res = measure_latency(
                    m, batches, beam, fixed_length=length, warmup=1 if r == 0 else 0, repeats=1,
                    num_threads=threads or None,
                )
                times[i].append(res.ms_per_sentence)
        for i in range(len(models)):
            out[i][int(bs)] = statistics.median(times[i])
    return out


def bleu_function(dataset: Any, src_dict: Any, tgt_dict: Any, gen_cfg: Any, device: torch.device, max_sentences: int) -> Callable[[nn.Module], tuple[float, int]]:
    """``model -> (tokenized BLEU, sentences)`` on the first ``max_sentences`` of ``dataset`` (0 = all)."""
    cfg = SimpleNamespace(**{k: gen_cfg[k] for k in gen_cfg})
    cfg.max_examples = max_sentences
    cfg.sacrebleu = False

    def fn(model: nn.Module) -> tuple[float, int]:
        res = translate_dataset(model, dataset, src_dict, tgt_dict, cfg, device)
        return float(res.bleu), int(res.n_sentences)

    return fn


def compare(before: Measurement, after: Measurement) -> dict[str, Any]:
    """Flat, JSON/MLflow-ready comparison of two measurements."""
    out: dict[str, Any] = {
        "params_before": before.parameters,
        "params_after": after.parameters,
        "params_kept": after.parameters / before.parameters,
        "flops_per_tgt_token_before": before.flops_per_tgt_token,
        "flops_per_tgt_token_after": after.flops_per_tgt_token,
        "flop_ideal_speedup": before.flops_per_sentence / max(after.flops_per_sentence, 1),
        "flops_beam": after.beam,
        "flops_length": after.length,
    }
    for bs in sorted(set(before.ms_per_sentence) & set(after.ms_per_sentence)):
        b, a = before.ms_per_sentence[bs], after.ms_per_sentence[bs]
        out[f"ms_per_sentence_b{bs}_before"] = b
        out[f"ms_per_sentence_b{bs}_after"] = a
        out[f"measured_speedup_b{bs}"] = b / a
        out[f"speedup_vs_ideal_b{bs}"] = (b / a) / out["flop_ideal_speedup"]
    if before.bleu is not None:
        out["bleu_before"] = before.bleu
    if after.bleu is not None:
        out["bleu_after"] = after.bleu
        out["bleu_sentences"] = after.bleu_sentences
    return out


def format_report(title: str, rows: dict[str, Any], rate: Optional[dict[str, Any]] = None) -> str:
    """The block a prune run prints."""
    lines = [title, "-" * len(title)]
    if rate:
        lines.append(
            f"compression rate (params kept vs the unpruned origin): requested {rate['requested_rate']:.4f}, "
            f"achieved {rate['achieved_rate']:.4f} ({100 * (rate['achieved_rate'] / rate['requested_rate'] - 1):+.2f} %)"
        )
        if rate.get("chain_rate") is not None and abs(rate["chain_rate"] - rate["requested_rate"]) > 1e-12:
            lines.append(f"  (the chain ends at CR {rate['chain_rate']:.4f}; this stage's share is shown above)")
    lines.append(
        f"parameters: {rows['params_before']:,} -> {rows['params_after']:,} ({100 * rows['params_kept']:.1f} % kept)"
    )
    beam, length = rows.get("flops_beam", "?"), rows.get("flops_length", "?")
    lines.append(
        f"FLOPs per target token, all {beam} beam hypotheses, {length} -> {length} tokens, incremental decoding: "
        f"{rows['flops_per_tgt_token_before'] / 1e6:.2f} M -> {rows['flops_per_tgt_token_after'] / 1e6:.2f} M; "
        f"FLOP-ideal speedup x{rows['flop_ideal_speedup']:.2f}"
    )
    engines = [k for k in rows if k.endswith("_before") and "_sent_per_s_b" in k]
    if engines:
        lines.append(
            f"speed in sentences/s (beam {beam}, exactly {length} steps, {rows.get('engines_threads', '?')} threads; "
            f"pet on {rows.get('engines_pet_device', 'cpu')}, CTranslate2 on the CPU; "
            f"of ideal = measured / FLOP-ideal speedup):"
        )
        lines += ["  " + line for line in engine_table(rows, rows["flop_ideal_speedup"])]
        if any(rows[k] > SPEEDUP_ABOVE_IDEAL for k in rows if "_speedup_vs_ideal_b" in k or k.startswith("speedup_vs_ideal_b")):
            lines.append(
                "  warning (!): faster than FLOP-ideal: timing noise from a loaded machine, or the two timings did not "
                "do the same work; trust only timings on an idle machine"
            )
    for key in sorted(k for k in rows if k.startswith("measured_speedup_b") and not engines):
        bs = key[len("measured_speedup_b"):]
        lines.append(
            f"latency batch {bs:>3} (beam {beam}, exactly {length} steps): {rows[f'ms_per_sentence_b{bs}_before']:.2f} -> "
            f"{rows[f'ms_per_sentence_b{bs}_after']:.2f} ms/sentence; measured speedup x{rows[key]:.2f} = "
            f"{rows[f'speedup_vs_ideal_b{bs}']:.2f} of FLOP-ideal"
        )
        if rows[f"speedup_vs_ideal_b{bs}"] > SPEEDUP_ABOVE_IDEAL:
            lines.append(
                "  warning: faster than FLOP-ideal: the two timings did not do the same work (other output lengths, "
                "or a loaded machine); trust only fixed-length timings on an idle machine"
            )
    if "bleu_after" in rows:
        before = f"{rows['bleu_before']:.2f}" if "bleu_before" in rows else "-"
        lines.append(f"BLEU ({rows['bleu_sentences']} sentences): {before} -> {rows['bleu_after']:.2f}")
    return "\n".join(lines)


def as_dict(m: Measurement) -> dict[str, Any]:
    return asdict(m)


def measurement_kwargs(cfg: Any) -> dict[str, Any]:
    """paired_latency() settings from a job config (``pruning.*`` report keys, ``generation.beam``)."""
    p = cfg.pruning
    return dict(
        beam=cfg.generation.beam,
        length=p.latency_length,
        batch_sizes=list(p.latency_batch_sizes),
        repeats=p.latency_repeats,
        threads=p.latency_threads,
    )


def measure_pair(cfg: Any, before: nn.Module, after: nn.Module, bleu_fn: Optional[Callable] = None) -> tuple[Measurement, Measurement]:
    kwargs = measurement_kwargs(cfg)
    b = measure(before, beam=kwargs["beam"], length=kwargs["length"], bleu_fn=bleu_fn)
    a = measure(after, beam=kwargs["beam"], length=kwargs["length"], bleu_fn=bleu_fn)
    if cfg.pruning.report_latency:
        b.ms_per_sentence, a.ms_per_sentence = paired_latency([before.eval(), after.eval()], **kwargs)
    return b, a


def engines_enabled(cfg: Any) -> bool:
    """Whether the report times CTranslate2 too (``pruning.report_engines``;
    null: when ``pruning.report_latency`` is on and ctranslate2 is installed).
    Asked for explicitly without ctranslate2, it fails here, before any work."""
    p = cfg.pruning
    if not p.report_latency:
        return False
    if p.report_engines is None:
        if ct2_available():
            return True
        log.info("the prune report times pet's eager loop only; for CTranslate2 float32/int8 speed beside it: %s",
                 INSTALL_HINT)
        return False
    if p.report_engines and not ct2_available():
        require_ctranslate2()
    return bool(p.report_engines)


def report_rows(cfg: Any, before: nn.Module, after: nn.Module, bleu_fn: Optional[Callable] = None,
                engines: bool = False) -> dict[str, Any]:
    """:func:`compare` of the two models; with ``engines``, their speed in
    pet's eager loop and in CTranslate2 float32/int8, timed in the same
    interleaved rounds (pet's ms/sentence then come from those rounds), with
    each engine's speedup as a share of the FLOP-ideal one and sizes on disk."""
    if not (engines and cfg.pruning.report_latency):
        return compare(*measure_pair(cfg, before, after, bleu_fn))
    kwargs = measurement_kwargs(cfg)
    kwargs["threads"] = kwargs["threads"] or torch.get_num_threads()  # the engine's 0 would mean all cores
    b = measure(before, beam=kwargs["beam"], length=kwargs["length"], bleu_fn=bleu_fn)
    a = measure(after, beam=kwargs["beam"], length=kwargs["length"], bleu_fn=bleu_fn)
    speed = compare_engines(before.eval(), after.eval(), engines=ENGINES, **kwargs)
    for m, side in ((b, "before"), (a, "after")):
        m.ms_per_sentence = {int(bs): 1000.0 / speed[f"pet_sent_per_s_b{bs}_{side}"] for bs in kwargs["batch_sizes"]}
    rows = {**compare(b, a), **speed, "engines_threads": kwargs["threads"],
            "engines_pet_device": str(next(after.parameters()).device)}
    for engine in ENGINES:
        for bs in kwargs["batch_sizes"]:
            rows[f"{engine}_speedup_vs_ideal_b{bs}"] = speed[f"{engine}_speedup_b{bs}"] / rows["flop_ideal_speedup"]
    return rows


def finetune_report(cfg: Any, data: Any, init_ckpt: dict[str, Any], finetuned: nn.Module, device: Any, tracker: Any = None, run_dir: Any = None) -> dict[str, Any]:
    """The report of a finetune run on a pruned model (empty if it was never pruned).

    Size, FLOPs and latency are compared with the unpruned model the pruning
    chain started from: its shape is in ``pruning_history``, and a model of that
    shape with random weights costs exactly what the real one costs (decoding
    runs a fixed number of steps). BLEU is the finetune input's vs the result's.
    """
    history = init_ckpt.get("pruning_history") or []
    if not history:
        return {}
    origin = TransformerModel(TransformerSpec.from_dict(history[0]["origin_spec"])).to(device).eval()
    before = model_from_checkpoint(init_ckpt).to(device).eval()
    bleu_fn = None
    if cfg.pruning.report_bleu:
        bleu_fn = bleu_function(data.split(cfg.generation.split), data.src_dict, data.tgt_dict, cfg.generation, device, cfg.pruning.bleu_sentences)
    ref, after = measure_pair(cfg, origin, finetuned.eval())  # the origin's weights are not at hand: no BLEU
    rows = compare(ref, after)
    if bleu_fn is not None:
        rows["bleu_before"] = bleu_fn(before)[0]
        rows["bleu_after"], rows["bleu_sentences"] = bleu_fn(finetuned)
    last = history[-1]
    rate = {"requested_rate": last["compression_rate"], "achieved_rate": after.parameters / history[0]["origin_parameters"]}
    text = format_report("Finetuned pruned model vs the unpruned origin (BLEU: before vs after finetuning)", rows, rate)
    print("\n" + text + "\n", flush=True)
    metrics = {**rate, **rows}
    if tracker is not None:
        tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    if run_dir is not None:
        atomic_write_text(Path(run_dir) / "prune_report.txt", text + "\n")
    return metrics


def pruned_shape(model) -> dict[str, Any]:
    """Per-layer widths of a (pruned) model: the result's record of its irregular shape."""
    spec = model.spec
    out = {}
    for side in ("encoder", "decoder"):
        st = getattr(spec, side)
        out[side] = {
            "embed_dim": st.embed_dim,
            "ffn_dims": [l.ffn_dim for l in st.layers],
            "self_attn_qk_vo": [[l.self_attn.qk_dim, l.self_attn.vo_dim] for l in st.layers],
        }
        if side == "decoder":
            out[side]["cross_attn_qk_vo"] = [[l.cross_attn.qk_dim, l.cross_attn.vo_dim] for l in st.layers if l.cross_attn]
    return out


def shape_lines(model) -> str:
    """The shape a prune run leaves, in a line per side, for the printed report."""
    lines = []
    for side, st in (("encoder", model.spec.encoder), ("decoder", model.spec.decoder)):
        attn = sorted({(l.self_attn.qk_dim, l.self_attn.vo_dim) for l in st.layers})
        lines.append(
            f"{side} after: width {st.embed_dim} (of {st.embed_scale_dim}), FFN {[l.ffn_dim for l in st.layers]}, "
            f"self-attention {st.layers[0].self_attn.heads} heads x (qk, vo) {attn}"
        )
    return "\n".join(lines)
