"""Speed of the same models in pet's eager loop and in CTranslate2, measured together.

A pruned model's value to a user is its speed in the engine it ships in; its
speed in pet's eager PyTorch loop is bounded by per-step overheads that do
not shrink with the model. :func:`engine_latency` times every (model, engine)
pair on the same fixed-length work (beam 5, ``length`` source tokens and
``length`` decoder steps), round after round, each round timing every pair
once, so that a change in machine load hits all pairs alike and their ratios
stay meaningful on a shared machine. :func:`export_engines` writes the
CTranslate2 folders a comparison needs; :func:`compare_engines` times an
unpruned and a pruned model in every engine and :func:`engine_table` prints
the result; :func:`export_speed` times one exported folder against pet.

CTranslate2 always runs on the CPU here, with ``threads`` intra-op threads;
pet's eager loop runs where the model's parameters are.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from torch import nn

from pet.analysis.latency import make_batches, measure_latency, synthetic_sentences
from pet.export.ctranslate2 import convert, folder_bytes
from pet.export.translator import CT2Translator, measure_ct2_latency

# What a comparison runs: pet's eager loop and the engine's two CPU types.
ENGINES = ("pet", "ct2_float32", "ct2_int8")
ENGINE_NAMES = {"pet": "pet eager", "ct2_float32": "CTranslate2 float32", "ct2_int8": "CTranslate2 int8",
                "ct2_int8_float32": "CTranslate2 int8_float32"}
# How to get the engine when it is missing (the optional dependency group).
INSTALL_HINT = 'pip install -e ".[serve]"'
# A speedup this far above the FLOP-ideal one means the timings did different work.
SPEEDUP_ABOVE_IDEAL = 1.1


def ct2_available() -> bool:
    """Whether ``ctranslate2`` can be imported here."""
    try:
        import ctranslate2  # noqa: F401, PLC0415 - optional dependency ctranslate2
    except ImportError:
        return False
    return True


@dataclass
class System:
    """One model in one engine: ``model`` runs in pet; ``translator`` in CTranslate2."""

    name: str
    engine: str
    model: Optional[nn.Module] = None
    translator: Optional[CT2Translator] = None
    bytes_on_disk: Optional[int] = None


def _symbols(size: int) -> list[str]:
    """A stand-in dictionary of ``size`` types (pet's four specials first):
    timing depends on the vocabulary's size, not its words."""
    return ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, size)]


def export_engines(model: nn.Module, name: str, folder: Path, threads: int,
                   engines: Sequence[str] = ENGINES, src_symbols: Optional[list[str]] = None,
                   tgt_symbols: Optional[list[str]] = None) -> list[System]:
    """``model`` as a :class:`System` per engine, exporting it to
    ``<folder>/<name>-<quantization>`` for the CTranslate2 ones."""
    spec = model.spec
    src = src_symbols or _symbols(spec.encoder.vocab_size)
    tgt = tgt_symbols or _symbols(spec.decoder.vocab_size)
    systems = []
    for engine in engines:
        if engine == "pet":
            systems.append(System(name, engine, model=model.eval()))
            continue
        quantization = engine.removeprefix("ct2_")
        out = convert(model, src, tgt, Path(folder) / f"{name}-{quantization}", quantization=quantization)
        systems.append(System(name, engine, translator=CT2Translator(out, threads=threads),
                              bytes_on_disk=folder_bytes(out)))
    return systems


def interleaved_rounds(systems: Sequence[System], batch_size: int, *, length: int = 25, beam: int = 5,
                       repeats: int = 3, threads: int = 2, seed: int = 0,
                       vocab: Optional[int] = None) -> list[list[float]]:
    """Sentences per second of every system in every round at ``batch_size``:
    each round times each system once on the same work (8 sentences at batch
    1, one full batch otherwise; one untimed pass each first). ``vocab``: the
    source vocabulary pet's synthetic sentences are drawn from (default: the
    smallest of the pet systems')."""
    n = 8 if batch_size == 1 else batch_size
    vocab = vocab or min((s.model.spec.encoder.vocab_size for s in systems if s.model is not None), default=100)
    batches = make_batches(synthetic_sentences(n, length, vocab, seed=seed), batch_size)
    rounds: list[list[float]] = [[] for _ in systems]
    for r in range(repeats):
        for i, s in enumerate(systems):
            if s.model is not None:
                res = measure_latency(s.model, batches, beam, fixed_length=length, warmup=1 if r == 0 else 0,
                                      repeats=1, num_threads=threads)
            else:
                res = measure_ct2_latency(s.translator, batch_size, length=length, beam=beam, num_sentences=n,
                                          warmup=1 if r == 0 else 0, repeats=1, seed=seed)
            rounds[i].append(res.sentences_per_second)
    return rounds


def engine_latency(systems: Sequence[System], *, batch_sizes: Sequence[int] = (1, 64), length: int = 25,
                   beam: int = 5, repeats: int = 3, threads: int = 2, seed: int = 0) -> list[dict[int, float]]:
    """Sentences per second of each system at each batch size: the median of
    :func:`interleaved_rounds`."""
    out: list[dict[int, float]] = [{} for _ in systems]
    for bs in batch_sizes:
        rounds = interleaved_rounds(systems, bs, length=length, beam=beam, repeats=repeats, threads=threads,
                                    seed=seed)
        for i in range(len(systems)):
            out[i][int(bs)] = statistics.median(rounds[i])
    return out


def compare_engines(before: nn.Module, after: nn.Module, *, threads: int = 2, batch_sizes: Sequence[int] = (1, 64),
                    length: int = 25, beam: int = 5, repeats: int = 3,
                    engines: Sequence[str] = ENGINES) -> dict[str, float]:
    """Sentences/s of an unpruned and a pruned model in each engine, and the
    files' sizes on disk, as flat metrics (``<engine>_sent_per_s_b<bs>_{before,after}``,
    ``<engine>_speedup_b<bs>``, ``ct2_<q>_mb_{before,after}``)."""
    with tempfile.TemporaryDirectory(prefix="pet-engines-") as tmp:
        systems = (export_engines(before, "before", Path(tmp), threads, engines)
                   + export_engines(after, "after", Path(tmp), threads, engines))
        speeds = engine_latency(systems, batch_sizes=batch_sizes, length=length, beam=beam, repeats=repeats,
                                threads=threads)
    metrics: dict[str, float] = {}
    by = {(s.name, s.engine): (s, v) for s, v in zip(systems, speeds)}
    for engine in engines:
        (b, vb), (a, va) = by[("before", engine)], by[("after", engine)]
        for bs in batch_sizes:
            metrics[f"{engine}_sent_per_s_b{bs}_before"] = vb[bs]
            metrics[f"{engine}_sent_per_s_b{bs}_after"] = va[bs]
            metrics[f"{engine}_speedup_b{bs}"] = va[bs] / vb[bs]
        if b.bytes_on_disk is not None:
            metrics[f"{engine}_mb_before"] = b.bytes_on_disk / 2**20
            metrics[f"{engine}_mb_after"] = a.bytes_on_disk / 2**20
    return metrics


def export_speed(model: nn.Module, folder: str | Path, quantization: str, *, threads: int,
                 batch_sizes: Sequence[int] = (1, 64), length: int = 25, beam: int = 5,
                 repeats: int = 3) -> dict[str, float]:
    """Sentences/s of an exported ``folder`` (loaded as stored) and of the
    ``model`` it was exported from in pet's eager loop, timed interleaved, as
    flat metrics: ``ct2_<quantization>_sent_per_s_b<bs>``,
    ``pet_sent_per_s_b<bs>`` and ``ct2_<quantization>_speedup_vs_pet_b<bs>``."""
    engine = f"ct2_{quantization}"
    systems = [System("model", "pet", model=model.eval()),
               System("export", engine, translator=CT2Translator(folder, threads=threads))]
    pet, ct2 = engine_latency(systems, batch_sizes=batch_sizes, length=length, beam=beam, repeats=repeats,
                              threads=threads)
    metrics: dict[str, float] = {}
    for bs in batch_sizes:
        metrics[f"{engine}_sent_per_s_b{bs}"] = ct2[bs]
        metrics[f"pet_sent_per_s_b{bs}"] = pet[bs]
        metrics[f"{engine}_speedup_vs_pet_b{bs}"] = ct2[bs] / pet[bs]
    return metrics


def speed_line(metrics: Mapping[str, float], quantization: str) -> str:
    """``CTranslate2 <quantization>: X sent/s at batch 1, Y at batch 64 (pet eager: ...)``
    from :func:`export_speed`'s metrics."""
    engine = f"ct2_{quantization}"
    sizes = sorted(int(m.group(1)) for k in metrics if (m := re.fullmatch(rf"{engine}_sent_per_s_b(\d+)", k)))
    ct2 = ", ".join(f"{metrics[f'{engine}_sent_per_s_b{bs}']:.1f}{' sent/s' if i == 0 else ''} at batch {bs}"
                    for i, bs in enumerate(sizes))
    pet = ", ".join(f"{metrics[f'pet_sent_per_s_b{bs}']:.1f}" for bs in sizes)
    ratio = ", ".join(f"x{metrics[f'{engine}_speedup_vs_pet_b{bs}']:.2f}" for bs in sizes)
    return f"CTranslate2 {quantization}: {ct2} (pet eager: {pet}; CTranslate2 is {ratio} as fast)"


_BEFORE = re.compile(r"^(\w+?)_sent_per_s_b(\d+)_before$")


def engine_table(metrics: Mapping[str, float], ideal: Optional[float] = None) -> list[str]:
    """:func:`compare_engines`' metrics as a table: a row per engine and batch
    size (sentences/s before and after, the speedup and, given the FLOP-ideal
    speedup ``ideal``, its share of it), then the sizes on disk."""
    found = {(m.group(1), int(m.group(2))) for k in metrics if (m := _BEFORE.match(k))}
    order = {e: i for i, e in enumerate(ENGINE_NAMES)}
    rows = sorted(found, key=lambda r: (order.get(r[0], len(order)), r[0], r[1]))
    head = f"{'engine':<26} {'batch':>5} {'before':>9} {'after':>9} {'speedup':>8}"
    lines = [head + (f" {'of ideal':>8}" if ideal else ""), "-" * (len(head) + (9 if ideal else 0))]
    for engine, bs in rows:
        before, after = metrics[f"{engine}_sent_per_s_b{bs}_before"], metrics[f"{engine}_sent_per_s_b{bs}_after"]
        speedup = metrics.get(f"{engine}_speedup_b{bs}", after / before)
        line = f"{ENGINE_NAMES.get(engine, engine):<26} {bs:>5} {before:>9.1f} {after:>9.1f} {'x' + format(speedup, '.2f'):>8}"
        if ideal:
            share = speedup / ideal
            line += f" {share:>8.2f}" + (" !" if share > SPEEDUP_ABOVE_IDEAL else "")
        lines.append(line)
    sizes = [f"{ENGINE_NAMES.get(e, e)} {metrics[f'{e}_mb_before']:.2f} -> {metrics[f'{e}_mb_after']:.2f} MB"
             for e in dict.fromkeys(e for e, _ in rows) if f"{e}_mb_before" in metrics]
    if sizes:
        lines.append("size on disk: " + ", ".join(sizes))
    return lines
