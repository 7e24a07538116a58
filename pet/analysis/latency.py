"""Wall-clock translation speed with the project's beam search.

A measurement is: ``warmup`` untimed passes over the batches, then ``repeats``
timed passes; the result is the median pass. Speed is reported as sentences per
second and milliseconds per sentence.

Comparing a model with its pruned version by free decoding mixes two things:
how fast each step is, and how many steps the model happens to take (a worse
model may stop earlier or run to the length limit). ``fixed_length=L`` removes
the second: every hypothesis is decoded for exactly L steps (L-1 tokens then
</s>) by the same :class:`~pet.generation.beam_search.BeamSearch` code — </s>
is forbidden until the last step and forced there — so candidate selection,
beam reordering and cache reordering cost what they cost in real decoding,
and two models are timed on identical work.

CPU timings need idle cores. With more busy threads than cores, OpenMP's
spin-waiting makes a 2-thread run many times slower than a 1-thread run (25x
was seen on a shared 2-core machine); ``LatencyResult.load_average`` records
the machine's load, and ``OMP_WAIT_POLICY=PASSIVE`` in the environment (set
before torch starts) limits the damage when cores cannot be reserved.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from pet.generation.beam_search import BeamSearch

PAD, EOS, UNK = 1, 2, 3
FIRST_REAL_TOKEN = 4


@dataclass
class LatencyResult:
    batch_size: int  # largest batch
    beam: int
    num_sentences: int  # per pass
    num_batches: int
    threads: int
    fixed_length: Optional[int]
    warmup: int
    repeats: int
    times_s: list[float] = field(default_factory=list)  # one per timed pass
    device: str = "cpu"
    # 1-minute load average when the measurement started (None where unknown):
    # a load above the free cores means the numbers are not trustworthy.
    load_average: Optional[float] = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def sentences_per_second(self) -> float:
        return self.num_sentences / self.median_s

    @property
    def ms_per_sentence(self) -> float:
        return 1000.0 * self.median_s / self.num_sentences

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            median_s=self.median_s,
            sentences_per_second=self.sentences_per_second,
            ms_per_sentence=self.ms_per_sentence,
        )
        return d


# ---------------------------------------------------------------- inputs


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the platform has none), recorded
    with every timing: a load above the free cores makes it untrustworthy."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def synthetic_sentences(
    num_sentences: int, src_len: int, vocab_size: int, seed: int = 0, eos: int = EOS, length_jitter: int = 0
) -> list[Tensor]:
    """Random sentences of ``src_len`` tokens (± ``length_jitter``), each ending with </s>."""
    g = torch.Generator().manual_seed(seed)
    low = min(FIRST_REAL_TOKEN, vocab_size - 1)
    out = []
    for _ in range(num_sentences):
        n = src_len
        if length_jitter:
            n += int(torch.randint(-length_jitter, length_jitter + 1, (1,), generator=g))
        n = max(n, 1)
        s = torch.randint(low, vocab_size, (n,), generator=g)
        s[-1] = eos
        out.append(s)
    return out


def make_batches(sentences: Sequence[Tensor], batch_size: int, pad: int = PAD, sort: bool = True) -> list[Tensor]:
    """Right-padded (B, S) batches of at most ``batch_size`` sentences.

    Real sentences (1-D id tensors ending with </s>) are sorted by length first,
    as a translation job batches them, unless ``sort`` is False.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = sorted(sentences, key=len) if sort else list(sentences)
    batches = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        width = max(len(s) for s in chunk)
        b = torch.full((len(chunk), width), pad, dtype=torch.long)
        for j, s in enumerate(chunk):
            b[j, : len(s)] = s
        batches.append(b)
    return batches


def synthetic_batches(
    num_sentences: int, src_len: int, batch_size: int, vocab_size: int, seed: int = 0, eos: int = EOS, pad: int = PAD
) -> list[Tensor]:
    return make_batches(synthetic_sentences(num_sentences, src_len, vocab_size, seed, eos), batch_size, pad)


# ---------------------------------------------------------------- decoders


def make_translator(
    model: nn.Module,
    beam: int = 5,
    fixed_length: Optional[int] = None,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    lenpen: float = 1.0,
    eos: int = EOS,
    pad: int = PAD,
    unk: int = UNK,
) -> Callable[[Tensor], Any]:
    """``src_tokens -> hypotheses`` for timing: the project's ``BeamSearch``.

    With ``fixed_length=L`` it runs with ``max_len = min_len = L-1`` (</s>
    forbidden before step L-1, forced at it): exactly L decoder steps, outputs
    of L-1 tokens + </s>.
    """
    if fixed_length is not None:
        if fixed_length < 1:
            raise ValueError(f"fixed_length must be >= 1, got {fixed_length}")
        return BeamSearch(
            model, beam=beam, max_len_a=0.0, max_len_b=fixed_length - 1, lenpen=lenpen,
            eos=eos, pad=pad, unk=unk, min_len=fixed_length - 1,
        ).generate
    return BeamSearch(model, beam, max_len_a, max_len_b, lenpen, eos, pad, unk).generate


# ---------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    src_batches: Sequence[Tensor],
    beam: int = 5,
    *,
    fixed_length: Optional[int] = None,
    warmup: int = 1,
    repeats: int = 5,
    num_threads: Optional[int] = None,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    lenpen: float = 1.0,
    eos: int = EOS,
    pad: int = PAD,
    unk: int = UNK,
    translate_fn: Optional[Callable[[Tensor], Any]] = None,
) -> LatencyResult:
    """Time translating ``src_batches`` (right-padded (B, S) id tensors).

    One pass translates every batch in turn; ``warmup`` passes are discarded,
    the median of ``repeats`` timed passes is reported. ``num_threads`` sets
    ``torch.set_num_threads`` for the measurement (restored afterwards).
    ``fixed_length`` decodes exactly that many steps (see :func:`make_translator`);
    ``translate_fn`` replaces the decoder altogether.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not src_batches:
        raise ValueError("src_batches is empty")
    device = next(model.parameters()).device
    batches = [b.to(device) for b in src_batches]
    translate = translate_fn or make_translator(
        model, beam, fixed_length, max_len_a, max_len_b, lenpen, eos, pad, unk
    )
    load = load_average()
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.eval()
    try:
        threads = torch.get_num_threads()
        with torch.inference_mode():
            for _ in range(warmup):
                for b in batches:
                    translate(b)
            _sync(device)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for b in batches:
                    translate(b)
                _sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
        if num_threads:
            torch.set_num_threads(old_threads)
    return LatencyResult(
        batch_size=max(int(b.size(0)) for b in batches),
        beam=beam,
        num_sentences=sum(int(b.size(0)) for b in batches),
        num_batches=len(batches),
        threads=threads,
        fixed_length=fixed_length,
        warmup=warmup,
        repeats=repeats,
        times_s=times,
        device=str(device),
        load_average=load,
    )


def latency_sweep(
    model: nn.Module,
    batch_sizes: Sequence[int] = (1, 64),
    src_len: int = 25,
    num_sentences: Optional[dict[int, int] | int] = None,
    beam: int = 5,
    fixed_length: Optional[int] = 25,
    num_threads: Optional[int] = None,
    warmup: int = 1,
    repeats: int = 5,
    sentences: Optional[Sequence[Tensor]] = None,
    seed: int = 0,
    **kwargs: Any,
) -> list[LatencyResult]:
    """Latency at each batch size on real ``sentences`` or synthetic ones.

    ``num_sentences`` per batch size (an int for all, or a dict); by default
    one batch per pass at every size except batch 1, which uses 8 sentences.
    """
    results = []
    for bs in batch_sizes:
        if isinstance(num_sentences, dict):
            n = num_sentences.get(bs, bs)
        elif num_sentences is not None:
            n = num_sentences
        else:
            n = 8 if bs == 1 else bs
        if sentences is not None:
            pool = list(sentences)[:n]
        else:
            pool = synthetic_sentences(n, src_len, model.spec.encoder.vocab_size, seed=seed)
        batches = make_batches(pool, bs)
        results.append(
            measure_latency(
                model, batches, beam, fixed_length=fixed_length, num_threads=num_threads,
                warmup=warmup, repeats=repeats, **kwargs,
            )
        )
    return results


def format_latency(results: Sequence[LatencyResult], title: str = "Latency") -> str:
    lines = [
        title,
        f"{'batch':>5}  {'beam':>4}  {'length':>6}  {'threads':>7}  {'sent/s':>9}  {'ms/sent':>9}  {'sentences':>9}  {'load':>5}",
    ]
    for r in results:
        length = str(r.fixed_length) if r.fixed_length else "free"
        lines.append(
            f"{r.batch_size:>5}  {r.beam:>4}  {length:>6}  {r.threads:>7}  {r.sentences_per_second:>9.2f}"
            f"  {r.ms_per_sentence:>9.2f}  {r.num_sentences:>9}"
            f"  {r.load_average if r.load_average is not None else float('nan'):>5.1f}"
        )
    return "\n".join(lines)
