"""stage=export: a checkpoint as a CTranslate2 model folder, checked against pet.

``pet stage=export init_from=<checkpoint .pt> [export.quantization=int8]
[export.dir=<folder>]`` converts the model (plain, pruned or PET student; see
:mod:`pet.export.ctranslate2`) and proves the conversion: the first
``export.check_sentences`` sentences of ``export.check_split`` are
beam-searched by pet and by a float32 conversion with the same settings
(``generation.beam``, ``max_len_a/b``, ``lenpen``), and the stage fails with
:class:`~pet.export.ctranslate2.ExportError` when fewer than
``export.min_identical`` of the best translations are identical. For an int8
export the float32 conversion is the one checked (quantization changes
numbers by design); the int8 folder's agreement with pet is measured and
reported, not required: as it loads by default (int8 matrix products, which
quantize activations too) and with its weights computed in float32
(``compute_type="float32"``: the error of the stored weights alone).

The folder (``export.dir``, default ``<run folder>/ct2-<quantization>``) holds
the engine's files (``model.bin``, ``config.json``, vocabularies), which load
with a plain ``ctranslate2.Translator(folder)``; ``pet_layout.json`` (how the
model was laid out, and pet's decoding settings); the text pipeline's files
(``pet_text.json``, ``bpe.codes``: raw text in, text out, for
``pet stage=translate translate.backend=ctranslate2 init_from=<folder>``);
and ``export.json`` (what was exported, the check's results, sizes on disk,
speed), also written to the run folder. A folder is only replaced once its
replacement passed the check.

With ``export.measure_speed`` (the default) the exported folder, loaded as
stored, and pet's eager loop on the same model are timed in interleaved rounds
(:func:`pet.export.speed.export_speed`: ``export.speed_length`` source tokens
decoded for exactly that many steps, beam ``generation.beam``,
``trainer.num_threads`` threads, at each of ``export.speed_batch_sizes``); the
stage prints ``CTranslate2 <quantization>: X sent/s at batch 1, Y at batch 64
(pet eager: ...)`` and records the numbers (``ct2_<quantization>_sent_per_s_b<bs>``,
``pet_sent_per_s_b<bs>``, ``ct2_<quantization>_speedup_vs_pet_b<bs>``).

``export.optional=true`` (the demo's last step) turns a missing ctranslate2
into a skip: one log line saying how to install it, a result without a metric,
and no ``result.json``, so that a pipeline run after installing it exports.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from pet.checkpoint import model_from_checkpoint
from pet.data.fileio import atomic_write_text
from pet.errors import CheckpointError, DataError
from pet.export.check import check_exactness, compare_with_pet
from pet.export.ctranslate2 import convert, folder_bytes, require_ctranslate2
from pet.export.speed import INSTALL_HINT, ct2_available, export_speed, speed_line
from pet.export.translator import CT2Translator
from pet.generation.text_pipeline import TextPipeline
from pet.stages.common import StageResult, finish_stage, setup_stage
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)

EXPORT_FILE = "export.json"


def _check_sources(data: Any, split: str, n: int) -> list[list[int]]:
    dataset = data.split(split)
    return [dataset[i][0].tolist() for i in range(min(n, len(dataset)))]


def _text_pipeline(ckpt: dict[str, Any], cfg: DictConfig, folder: Path) -> Optional[str]:
    """Save the checkpoint's text pipeline into ``folder``; None, or why it could not."""
    try:
        TextPipeline.from_checkpoint(ckpt, data_root=str(cfg.paths.data_root), where=str(cfg.init_from)).save(folder)
    except (CheckpointError, DataError) as e:
        return str(e)
    return None


def _skipped(cfg: DictConfig) -> StageResult:
    """The result of an optional export where ctranslate2 is missing. It
    writes no result.json: the export is not done, and a pipeline re-run after
    installing the engine must not skip it as finished."""
    why = f"ctranslate2 is not installed; to export and time the model in CTranslate2: {INSTALL_HINT}"
    log.warning("stage=export skipped (export.optional=true): %s", why)
    return StageResult(stage="export", metric_name="share_identical", metric=None,
                       metrics={"skipped": why})


def run(cfg: DictConfig) -> StageResult:
    e = cfg.export
    if e.optional and not ct2_available():
        return _skipped(cfg)
    require_ctranslate2()
    setup = setup_stage(cfg, data=e.check_sentences > 0, checkpoint=True, missing_checkpoint=(
        "stage=export needs init_from=<checkpoint .pt> (e.g. a run's checkpoint_best.pt)"))
    rd, ckpt = setup.run_dir, setup.checkpoint
    model = model_from_checkpoint(ckpt).eval()
    gen = cfg.generation
    decoding = {"beam": int(gen.beam), "max_len_a": float(gen.max_len_a), "max_len_b": int(gen.max_len_b),
                "lenpen": float(gen.lenpen)}
    quantization = str(e.quantization)
    out = Path(str(e.dir)).expanduser() if e.dir else rd / f"ct2-{quantization}"
    src_symbols, tgt_symbols = ckpt["src_dict"], ckpt["tgt_dict"]
    extra = {"decoding": decoding, "source_checkpoint": str(cfg.init_from)}
    threads = torch.get_num_threads()  # as setup_stage configured them (trainer.num_threads)
    sources = _check_sources(setup.data, str(e.check_split), int(e.check_sentences)) if e.check_sentences else []
    check_args = dict(beam=decoding["beam"], max_len_a=decoding["max_len_a"], max_len_b=decoding["max_len_b"],
                      lenpen=decoding["lenpen"])

    with tracked_run(cfg) as tracker:
        metrics: dict[str, Any] = {"quantization": quantization, "export_dir": str(out)}
        staging = out.parent / f".{out.name}.float32-check-{os.getpid()}"
        try:
            convert(model, src_symbols, tgt_symbols, staging, "float32", extra)
            metrics["float32_model_bytes"] = (staging / "model.bin").stat().st_size
            if sources:
                report = check_exactness(model, CT2Translator(staging, threads=threads), sources, src_symbols,
                                         tgt_symbols, min_share=float(e.min_identical), **check_args)
                log.info("float32 export vs pet on %d %s sentences: %s", len(sources), e.check_split, report.summary())
                metrics.update(share_identical=report.share_identical, identical=report.identical,
                               check_sentences=report.sentences, length_limited=report.length_limited,
                               max_score_difference=report.max_score_difference,
                               max_logprob_difference=report.max_logprob_difference)
                metrics["check"] = report.to_dict()
            else:
                log.warning("export.check_sentences=0: the export is not checked against pet")
            if quantization == "float32":
                if out.exists():
                    shutil.rmtree(out)
                staging.rename(out)
            else:
                convert(model, src_symbols, tgt_symbols, out, quantization, extra)
                if sources:
                    q = compare_with_pet(model, CT2Translator(out, threads=threads), sources, src_symbols,
                                         tgt_symbols, **check_args)
                    w = compare_with_pet(model, CT2Translator(out, threads=threads, compute_type="float32"), sources,
                                         src_symbols, tgt_symbols, **check_args)
                    log.info("%s export vs pet: %s; its weights computed in float32: %s", quantization, q.summary(),
                             w.summary())
                    metrics.update(quantized_share_identical=q.share_identical,
                                   quantized_max_logprob_difference=q.max_logprob_difference,
                                   quantized_weights_share_identical=w.share_identical,
                                   quantized_weights_max_logprob_difference=w.max_logprob_difference)
                    metrics["quantized_check"] = q.to_dict()
        finally:
            if staging.exists():
                shutil.rmtree(staging)

        metrics[f"ct2_{quantization}_mb"] = folder_bytes(out) / 2**20  # the engine's files alone
        if e.measure_speed:
            speed = export_speed(model, out, quantization, threads=threads, batch_sizes=list(e.speed_batch_sizes),
                                 length=int(e.speed_length), beam=decoding["beam"], repeats=int(e.speed_repeats))
            metrics.update(speed, speed_threads=threads, speed_length=int(e.speed_length),
                           speed_beam=decoding["beam"], speed_repeats=int(e.speed_repeats))
            print(speed_line(speed, quantization), flush=True)
        missing = _text_pipeline(ckpt, cfg, out)
        if missing:
            log.warning("the export holds no text pipeline, so it translates subword tokens only, not raw text: %s",
                        missing)
        metrics.update(
            text_pipeline=missing is None,
            model_bytes=(out / "model.bin").stat().st_size,
            folder_bytes=folder_bytes(out),
            pet_float32_weights_bytes=4 * model.num_parameters(),
            parameters=model.num_parameters(),
        )
        record = {"format": str(e.format), "checkpoint": str(cfg.init_from), "decoding": decoding,
                  "text_pipeline_missing": missing, **metrics}
        text = json.dumps(record, indent=2, default=str) + "\n"
        atomic_write_text(out / EXPORT_FILE, text)
        atomic_write_text(rd / EXPORT_FILE, text)
        tracker.log_artifact(rd / EXPORT_FILE)
        log.info("exported %s (%s, %.1f MB) to %s", cfg.init_from, quantization, metrics["model_bytes"] / 1e6, out)
        share = metrics.get("share_identical")
        result = StageResult(
            stage="export",
            metric_name="share_identical",
            metric=share,
            checkpoint=str(cfg.init_from),
            metrics={k: v for k, v in metrics.items() if k not in ("check", "quantized_check")},
        )
        return finish_stage(cfg, result, tracker)
