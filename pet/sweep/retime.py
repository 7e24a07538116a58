"""Re-timing a sweep's checkpoints for the report (``report.measure=true``).

Jobs whose results lack parameters, FLOPs or latency are measured here, one
after another in this process, each with identical work (synthetic sources,
the same beam, a fixed number of decoding steps), so their latencies compare.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pet.sweep.collect import COMPLETED, Job
from pet.sweep.metrics import LATENCY_PREFIX

if TYPE_CHECKING:
    from pet.sweep.report import ReportOptions

log = logging.getLogger(__name__)


def measure_jobs(jobs: Sequence[Job], opts: "ReportOptions", device: str = "cpu") -> list[str]:
    """Fill parameters / FLOPs / latency for completed jobs whose results lack
    them, from their checkpoints: identical work for every model (synthetic
    sources of ``latency_length`` tokens, beam ``beam``, exactly
    ``latency_length`` decoding steps) in this one process, one after another.
    Returns the notes for the report (what was measured, and how)."""
    need = [j for j in jobs if j.status == COMPLETED and j.checkpoint and Path(j.checkpoint).is_file()]
    if not need:
        return []
    # deferred: torch, the model code and the analysis tools load only when a checkpoint is to be timed
    import torch

    from pet.analysis.flops import count_flops
    from pet.analysis.latency import latency_sweep
    from pet.checkpoint import load_checkpoint, model_from_checkpoint
    from pet.runtime import configure_threads

    threads = configure_threads(opts.threads)
    notes = []
    for j in need:
        lat_keys = [f"{LATENCY_PREFIX}{bs}" for bs in opts.latency_batch_sizes]
        todo_lat = [bs for bs, k in zip(opts.latency_batch_sizes, lat_keys) if k not in j.metrics]
        todo_flops = "flops_per_tgt_token" not in j.metrics
        todo_params = "parameters" not in j.metrics
        if not (todo_lat or todo_flops or todo_params):
            continue
        model = model_from_checkpoint(load_checkpoint(j.checkpoint)).to(torch.device(device)).eval()
        if todo_params:
            j.metrics["parameters"] = int(model.num_parameters())
            j.measured.append("parameters")
        if todo_flops:
            rep = count_flops(model, src_len=opts.latency_length, tgt_len=opts.latency_length, beam=opts.beam)
            j.metrics["flops_per_tgt_token"] = float(rep.total_per_tgt_token)
            j.measured.append("flops_per_tgt_token")
        if todo_lat:
            res = latency_sweep(model, batch_sizes=tuple(todo_lat), src_len=opts.latency_length, beam=opts.beam,
                                fixed_length=opts.latency_length, num_threads=threads, warmup=1,
                                repeats=opts.latency_repeats)
            for bs, r in zip(todo_lat, res):
                j.metrics[f"{LATENCY_PREFIX}{bs}"] = float(r.ms_per_sentence)
                j.measured.append(f"{LATENCY_PREFIX}{bs}")
        log.info("measured %s: %s", j.name, ", ".join(f"{k}={j.metrics[k]:.4g}" for k in j.measured))
    if any(j.measured for j in jobs):
        notes.append(
            f"measured by the report from each checkpoint: parameters/FLOPs/latency where the job had none "
            f"(beam {opts.beam}, {opts.latency_length} source tokens and decoding steps, batch sizes "
            f"{list(opts.latency_batch_sizes)}, median of {opts.latency_repeats}, {threads} threads, {device})"
        )
    return notes
