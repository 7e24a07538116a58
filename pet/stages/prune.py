"""stage=prune: one SRP pruning run (a stage of a chain, or the whole thing).

    pet stage=prune pruning=single_stage pruning.compression_rate=0.5 init_from=<plain or pruned .pt>
    pet stage=prune pruning=two_stage_1 pruning.compression_rate=0.25 shrink=arithmetic shrink.unit=epoch init_from=...
    pet stage=prune pruning=two_stage_2 pruning.compression_rate=0.25 init_from=<stage 1>/checkpoint_pruned.pt

Recipe (steps 1-4 in :mod:`pet.stages.prune_steps`, each one module of :mod:`pet.pruning`):

1. load ``init_from`` (a plain or already pruned model, never a gated
   mid-pruning checkpoint) and make its pruning-safe copy (all c = 1);
2. importance −∂L/∂c of this stage's groups over a seeded sample of training
   batches (or seeded random scores), the rate solver's prune counts for this
   stage, and the selection;
3. ``pruning.pruning_period`` epochs of training with the selected units
   frozen and their c shrinking to 0 (``shrink=...``), the rest learning with
   KD from a frozen copy of the input model; ``trainer.max_epoch`` is set to
   the period (never unbounded) and early stopping is off;
4. physical removal into a smaller dense model, checked on real validation
   batches (teacher-forced log-probs within ``pruning.verify_tolerance`` in
   float64, or the run fails; the float32 difference is reported too), saved as ``checkpoint_pruned.pt``: a plain checkpoint that
   ``stage=evaluate``/``summary``/``finetune``/``prune`` load with nothing else,
   carrying ``pruning_history`` (one entry per prune run of the chain);
5. the report: requested vs achieved compression rate, parameters, FLOPs,
   latency at batch 1 and 64, FLOP-ideal vs measured speedup, BLEU before and
   after; with ``pruning.report_engines`` (on by default where ctranslate2 is
   installed) the same speed in CTranslate2 float32 and int8 beside pet's
   eager loop, and the exported folders' sizes; printed, logged to MLflow,
   written to ``prune_report.{txt,json}`` and ``result.json``.

Re-running the same command resumes the training from ``checkpoint_last.pt``
(gated model, optimizer, shrink counter, selection); a finished run is a no-op.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.data.fileio import atomic_write_text
from pet.errors import CheckpointError, ConfigError
from pet.pruning.report import bleu_function, engines_enabled, format_report, pruned_shape, report_rows, shape_lines
from pet.runtime import is_main_process, wait_for_all_ranks
from pet.stages.common import StageResult, finish_stage, read_result, run_dir, setup_stage
from pet.stages.lifecycle import tracked_run
from pet.stages.prune_steps import LAST, PRUNED, prune_and_remove, warm_up

log = logging.getLogger(__name__)

MISSING = "stage=prune needs init_from=<checkpoint to prune> (a trained plain or pruned model)"


def _report(cfg: DictConfig, data: Any, base, small, device: torch.device, engines: bool) -> dict[str, Any]:
    p = cfg.pruning
    bleu_fn = None
    if p.report_bleu:
        bleu_fn = bleu_function(
            data.split(cfg.generation.split), data.src_dict, data.tgt_dict, cfg.generation, device, p.bleu_sentences
        )
    return report_rows(cfg, base.to(device), small.to(device), bleu_fn, engines=engines)


def run(cfg: DictConfig) -> StageResult:
    """``pruning.iteration=i``: that one iteration. ``0`` (the default): all
    ``pruning.pruning_iter`` iterations from this one command, iteration i in
    ``<run_dir>/iter<i>`` starting from iteration i-1's result (one iteration:
    in ``<run_dir>`` itself)."""
    p = cfg.pruning
    if p.iteration:
        return _run_iteration(cfg)
    rd = run_dir(cfg)
    if p.pruning_iter == 1:
        return _run_iteration(_iteration_config(cfg, 1, rd, cfg.init_from))
    done = read_result(rd)
    if done is not None and done.stage == "prune" and done.checkpoint and Path(done.checkpoint).exists():
        log.info("%s: all %d iterations are done (%s)", rd, p.pruning_iter, done.checkpoint)
        return done
    init, results = cfg.init_from, []
    for i in range(1, p.pruning_iter + 1):
        log.info("=== pruning iteration %d of %d", i, p.pruning_iter)
        results.append(_run_iteration(_iteration_config(cfg, i, rd / f"iter{i}", init)))
        init = results[-1].checkpoint
    last = results[-1]
    result = StageResult(stage="prune", metric_name=last.metric_name, metric=last.metric, checkpoint=last.checkpoint,
                         metrics={**last.metrics,
                                  "iteration_achieved_rates": [r.metrics["achieved_rate"] for r in results]},
                         run_id=last.run_id)
    # each iteration logged to its own tracking run; this folder records the chain's end
    return finish_stage(cfg, result)


def _iteration_config(cfg: DictConfig, iteration: int, directory: Path, init_from: str) -> DictConfig:
    sub = copy.deepcopy(cfg)
    sub.pruning.iteration, sub.paths.run_dir, sub.init_from = iteration, str(directory), str(init_from)
    return sub


def _resume_run_id(rd: Path, pruned: Optional[dict[str, Any]], reset: bool) -> Optional[str]:
    """The tracking run an earlier attempt of this iteration logged to."""
    if pruned is not None:
        return pruned.get("mlflow_run_id")
    if (rd / LAST).exists() and not reset:
        return load_checkpoint(rd / LAST).get("mlflow_run_id")
    return None


def _run_iteration(cfg: DictConfig) -> StageResult:
    if not cfg.init_from:
        raise ConfigError(MISSING)
    rd = run_dir(cfg)
    done = read_result(rd)
    if done is not None and done.stage == "prune" and done.checkpoint and Path(done.checkpoint).exists():
        log.info("%s is already pruned (%s); nothing to do", rd, done.checkpoint)
        return done
    setup = setup_stage(cfg, checkpoint=True)
    data, device, init = setup.data, setup.device, setup.checkpoint
    engines = engines_enabled(cfg)  # before the pruning: a missing engine fails now, not after it
    base = model_from_checkpoint(init).to(device).eval()
    if base.spec.gated:
        raise CheckpointError(
            f"{cfg.init_from} is a gated mid-pruning checkpoint; pass a trained plain model or a prune run's {PRUNED}"
        )
    pruned_ckpt = load_checkpoint(rd / PRUNED) if (rd / PRUNED).exists() else None
    period = (f"{cfg.pruning.period_updates} updates" if cfg.pruning.period_updates > 0
              else f"{cfg.pruning.pruning_period} epochs")
    log.info("pruning %s (%s parameters): targets=%s, compression_rate=%s, shrink=%s/%s over %s",
             cfg.init_from, f"{base.num_parameters():,}", cfg.pruning.targets, cfg.pruning.compression_rate,
             cfg.shrink.type, cfg.shrink.unit, period)

    with tracked_run(cfg, resume_run_id=_resume_run_id(rd, pruned_ckpt, cfg.trainer.reset)) as tracker:
        if pruned_ckpt is not None:
            log.info("%s exists; skipping to the report", rd / PRUNED)
            small = model_from_checkpoint(pruned_ckpt).to(device)
            entry = pruned_ckpt["pruning_history"][-1]
        else:
            source = cfg.init_from
            if cfg.pruning.warmup_epochs > 0:
                base, source = warm_up(cfg, rd, data, base, init, tracker, device)
            small, entry = prune_and_remove(cfg, rd, data, base, init, tracker, device, source)
        small.eval()
        if not is_main_process():  # distributed job: rank 0 measures, reports and saves
            wait_for_all_ranks()  # the barrier rank 0 reaches in finish_stage, after its files
            return StageResult(stage="prune", metric_name="achieved_rate", metric=entry["achieved_rate"],
                               checkpoint=str(rd / PRUNED), metrics={"achieved_rate": entry["achieved_rate"]})
        rows = _report(cfg, data, base, small, device, engines)
        rate = {
            "requested_rate": entry["requested_rate"],
            "achieved_rate": entry["achieved_rate"],
            "chain_rate": entry["compression_rate"],
        }
        metrics = {
            **rate,
            "rate_error": entry["achieved_rate"] / entry["requested_rate"] - 1,
            "origin_parameters": entry["origin_parameters"],
            "removal_max_logprob_diff": entry["removal_max_logprob_diff"],
            "removal_max_logprob_diff_fp32": entry.get("removal_max_logprob_diff_fp32", float("nan")),
            **rows,
        }
        title = f"SRP prune ({entry['targets']}, iteration {entry['iteration']}/{entry['pruning_iter']}, " \
                f"shrink {entry['shrink'][0]}/{entry['shrink'][1]}, importance {entry['importance']})"
        text = format_report(title, rows, rate) + "\n" + shape_lines(small)
        print("\n" + text + "\n", flush=True)
        atomic_write_text(rd / "prune_report.txt", text + "\n")
        atomic_write_text(rd / "prune_report.json", json.dumps(metrics, indent=2, default=str))
        tracker.log_artifact(rd / "prune_report.txt")
        metric_name, metric = (("bleu", rows["bleu_after"]) if "bleu_after" in rows
                               else ("achieved_rate", entry["achieved_rate"]))
        result = StageResult(
            stage="prune",
            metric_name=metric_name,
            metric=metric,
            checkpoint=str(rd / PRUNED),
            metrics={**metrics, "shape": pruned_shape(small)},
        )
        return finish_stage(cfg, result, tracker)
