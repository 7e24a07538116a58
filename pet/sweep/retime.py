"""Re-timing a sweep's checkpoints for the report (``report.measure=true``).

Jobs whose results lack parameters, FLOPs or latency are measured here, one
after another in this process, each with identical work (synthetic sources,
the same beam, a fixed number of decoding steps), so their latencies compare.
Where ctranslate2 is installed, each such checkpoint is also exported to
CTranslate2 int8 (a temporary folder) and timed there on the same work, with
its folder's size: ``ct2_int8_latency_ms_b<N>`` and ``ct2_int8_mb``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from pet.analysis.flops import count_flops
from pet.analysis.latency import latency_sweep
from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.export.ctranslate2 import ExportError
from pet.export.speed import INSTALL_HINT, ct2_available, engine_latency, export_engines
from pet.runtime import configure_threads
from pet.sweep.collect import COMPLETED, Job
from pet.sweep.metrics import LATENCY_PREFIX

# What the report times in CTranslate2: the quantization its plots prefer.
CT2_ENGINE = "ct2_int8"

if TYPE_CHECKING:
    from pet.sweep.report import ReportOptions

log = logging.getLogger(__name__)


def measure_jobs(jobs: Sequence[Job], opts: "ReportOptions", device: str = "cpu") -> list[str]:
    """Fill parameters / FLOPs / latency for completed jobs whose results lack
    them, from their checkpoints: identical work for every model (synthetic
    sources of ``latency_length`` tokens, beam ``beam``, exactly
    ``latency_length`` decoding steps) in this one process, one after another;
    with ctranslate2 installed, also CTranslate2 int8's ms/sentence and size
    where they lack them. Returns the notes for the report (what was measured,
    and how)."""
    need = [j for j in jobs if j.status == COMPLETED and j.checkpoint and Path(j.checkpoint).is_file()]
    if not need:
        return []
    threads = configure_threads(opts.threads)
    ct2 = ct2_available()
    notes = []
    missing_ct2 = 0
    for j in need:
        lat_keys = [f"{LATENCY_PREFIX}{bs}" for bs in opts.latency_batch_sizes]
        todo_lat = [bs for bs, k in zip(opts.latency_batch_sizes, lat_keys) if k not in j.metrics]
        todo_flops = "flops_per_tgt_token" not in j.metrics
        todo_params = "parameters" not in j.metrics
        todo_ct2 = [bs for bs in opts.latency_batch_sizes if f"{CT2_ENGINE}_latency_ms_b{bs}" not in j.metrics]
        todo_size = f"{CT2_ENGINE}_mb" not in j.metrics
        if not ct2:
            missing_ct2 += bool(todo_ct2 or todo_size)
            todo_ct2, todo_size = [], False
        if not (todo_lat or todo_flops or todo_params or todo_ct2 or todo_size):
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
        if todo_ct2 or todo_size:
            try:
                _time_ct2(j, model, opts, threads, todo_ct2)
            except ExportError as e:
                log.warning("%s not timed in CTranslate2: %s", j.name, e)
                notes.append(f"`{j.name}` not timed in CTranslate2: {e}")
        log.info("measured %s: %s", j.name, ", ".join(f"{k}={j.metrics[k]:.4g}" for k in j.measured))
    if any(j.measured for j in jobs):
        notes.append(
            f"measured by the report from each checkpoint: parameters/FLOPs/latency where the job had none "
            f"(beam {opts.beam}, {opts.latency_length} source tokens and decoding steps, batch sizes "
            f"{list(opts.latency_batch_sizes)}, median of {opts.latency_repeats}, {threads} threads, {device}"
            + ("; CTranslate2 int8 on the CPU, same work and threads)" if ct2 else ")")
        )
    if missing_ct2:
        notes.append(f"{missing_ct2} checkpoint(s) not timed in CTranslate2: ctranslate2 is not installed "
                     f"({INSTALL_HINT})")
    return notes


def _time_ct2(job: Job, model, opts: "ReportOptions", threads: int, batch_sizes: list[int]) -> None:
    """``job``'s model exported to CTranslate2 int8 in a temporary folder:
    its ms/sentence at ``batch_sizes`` and the folder's size, into its metrics."""
    with tempfile.TemporaryDirectory(prefix="pet-report-") as tmp:
        (system,) = export_engines(model, "job", Path(tmp), threads, engines=(CT2_ENGINE,))
        if batch_sizes:
            (speed,) = engine_latency([system], batch_sizes=batch_sizes, length=opts.latency_length, beam=opts.beam,
                                      repeats=opts.latency_repeats, threads=threads)
            for bs in batch_sizes:
                job.metrics[f"{CT2_ENGINE}_latency_ms_b{bs}"] = 1000.0 / speed[bs]
                job.measured.append(f"{CT2_ENGINE}_latency_ms_b{bs}")
        if f"{CT2_ENGINE}_mb" not in job.metrics:
            job.metrics[f"{CT2_ENGINE}_mb"] = system.bytes_on_disk / 2**20
            job.measured.append(f"{CT2_ENGINE}_mb")
