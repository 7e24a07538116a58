"""stage=prune: one SRP pruning run (a stage of a chain, or the whole thing).

    pet stage=prune pruning=single_stage pruning.compression_rate=0.5 init_from=<plain or pruned .pt>
    pet stage=prune pruning=two_stage_1 pruning.compression_rate=0.25 shrink=arithmetic shrink.unit=epoch init_from=...
    pet stage=prune pruning=two_stage_2 pruning.compression_rate=0.25 init_from=<stage 1>/checkpoint_pruned.pt

Recipe (each step one module of :mod:`pet.pruning`):

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
   after; printed, logged to MLflow, written to ``prune_report.{txt,json}``
   and ``result.json``.

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

from pet.checkpoint import atomic_write_text, load_checkpoint, model_from_checkpoint, save_checkpoint
from pet.errors import CheckpointError, ConfigError
from pet.runtime import configure_threads, is_main_process, seed_everything, seed_rank, select_device
from pet.stages.common import StageResult, check_same_vocab, load_data, origin_teacher, read_result, resolved_config, run_dir, tracked_run, write_result
from pet.pruning.origin import origin_checkpoint
from pet.training.schedule import continuation_schedule, final_lr

log = logging.getLogger(__name__)

PRUNED = "checkpoint_pruned.pt"
LAST = "checkpoint_last.pt"


# ----------------------------------------------------------------- helpers


def _fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    p, s = cfg.pruning, cfg.shrink
    return {
        "init_from": str(Path(cfg.init_from).resolve()),
        "targets": p.targets,
        "compression_rate": float(p.compression_rate),
        "pruning_iter": int(p.pruning_iter),
        "iteration": int(p.iteration),
        "pruning_period": int(p.pruning_period),
        "period_updates": int(p.period_updates),
        "layernorm": p.layernorm,
        "importance": p.importance,
        "importance_batches": int(p.importance_batches),
        "importance_seed": int(p.importance_seed),
        "shrink": [s.type, s.unit, float(s.final_value)],
        "kd_teacher": p.kd_teacher,
        "warmup_epochs": int(p.warmup_epochs),
    }


def kd_teacher(cfg: DictConfig, base, history: list[dict[str, Any]], data: Any):
    """The model the pruning period distils from: the chain's unpruned origin
    (the method's teacher; ``pruning.kd_teacher=origin``) or this run's input
    (``previous``: the last iteration's or stage's result)."""
    if cfg.pruning.kd_teacher == "previous" or not history:
        return copy.deepcopy(base)
    return origin_teacher(cfg.init_from, history, data, "pruning.kd_teacher=previous")


def _check_chain(cfg: DictConfig, history: list[dict[str, Any]]) -> None:
    p = cfg.pruning
    if p.iteration > p.pruning_iter:
        raise ConfigError(f"pruning.iteration={p.iteration} > pruning.pruning_iter={p.pruning_iter}")
    last = history[-1] if history else None
    if p.iteration > 1:
        ok = last is not None and last["targets"] == p.targets and int(last["iteration"]) == p.iteration - 1
        if not ok:
            raise ConfigError(
                f"pruning.iteration={p.iteration} continues iteration {p.iteration - 1} of pruning.targets={p.targets}; "
                f"init_from must be that run's {PRUNED}"
            )
    if p.targets == "emb" and any(h["targets"] in ("heads_ffn", "all") for h in history):
        log.warning("pruning the width after heads/FFN were pruned: the chain will end below pruning.compression_rate")
    if history and abs(float(history[0]["compression_rate"]) - float(p.compression_rate)) > 1e-12:
        log.warning(
            "this chain started with pruning.compression_rate=%s; this run asks for %s of the unpruned model's parameters",
            history[0]["compression_rate"],
            p.compression_rate,
        )


def importance_batches(cfg: DictConfig, train: Any) -> list:
    """The seeded sample of training batches -dL/dc is taken over (benchmarks reuse it)."""
    from pet.data.batching import TokenBatchSampler

    sampler = TokenBatchSampler(
        train.src_sizes, train.tgt_sizes, max_tokens=cfg.trainer.max_tokens,
        max_sentences=cfg.trainer.max_sentences, seed=cfg.pruning.importance_seed,
    )
    picked = sampler.batches_for_epoch(1)[: cfg.pruning.importance_batches]
    return [train.collate(b) for b in picked]


def _verify_batches(cfg: DictConfig, valid: Any) -> list:
    from pet.data.batching import eval_batches

    batches = eval_batches(valid.src_sizes, valid.tgt_sizes, cfg.trainer.max_tokens, cfg.trainer.max_sentences)
    n = len(batches)
    # Spread over the length range: short and long sentences both.
    k = min(cfg.pruning.verify_batches, n)
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    return [valid.collate(batches[i]) for i in picks]


def _select(cfg: DictConfig, data: Any, base, gated, history: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """Importance, rate and selection for this run: the ``pruning_state`` saved with every checkpoint."""
    from pet.pruning.gates import check_prunable, dim_ownership, gate_groups, groups_for, meta_model
    from pet.pruning.importance import CRITERIA, ImportanceContext
    from pet.pruning.rate import chain_target
    from pet.pruning.selection import select_for_rate, selection_summary

    p = cfg.pruning
    origin_spec = history[0]["origin_spec"] if history else base.spec.to_dict()
    origin = meta_model(origin_spec)
    target = chain_target(
        dim_ownership(origin), gate_groups(origin), p.targets, p.compression_rate, p.iteration, p.pruning_iter, history
    )
    groups = groups_for(gated, p.targets)
    own = dim_ownership(gated)
    check_prunable(own, groups)
    ctx = ImportanceContext(gated, groups, lambda: importance_batches(cfg, data.split("train")),
                            padding_idx=data.tgt_dict.pad, seed=p.importance_seed)
    chosen = select_for_rate(own, groups, CRITERIA[p.importance](ctx), target_parameters=target.target_parameters)
    prune_plan, selection, predicted = chosen.plan, chosen.selection, chosen.predicted_parameters
    log.info(
        "%s pruning: target %.0f parameters (%.4f of the origin's %s), keep ratio %.4f (closed form %.4f); "
        "after selection %.0f",
        p.targets, target.target_parameters, target.target_rate, f"{target.origin_parameters:,}",
        prune_plan.keep_ratio, prune_plan.keep_ratio_closed_form, predicted,
    )
    for name, frac in selection_summary(groups, selection).items():
        log.debug("  %s keeps %s", name, frac)
    return {
        "fingerprint": _fingerprint(cfg),
        "origin_spec": origin_spec,
        "target": vars(target) | {"target_rate": target.target_rate},
        "plan": prune_plan.to_dict(),
        "selection": {k: list(map(int, v)) for k, v in selection.items()},
        "groups": [g.name for g in groups],
        "predicted_parameters": predicted,
    }


def _warm_up(cfg: DictConfig, rd: Path, data: Any, base, init: dict[str, Any], tracker, device: torch.device):
    """``pruning.warmup_epochs`` of plain training of the input model before its
    importance is taken (the original's --warming-up), in ``<run_dir>/warmup``
    (resumable; a finished warm-up is only reloaded). Returns the trained model
    and its checkpoint, which the chain then counts as its unpruned origin."""
    from pet.stages.pretrain import resume_checkpoint
    from pet.training.trainer import Budget, Trainer

    wd = rd / "warmup"
    wd.mkdir(parents=True, exist_ok=True)
    trainer = Trainer.for_data(
        data, resume=resume_checkpoint(cfg, wd), cfg=cfg, model=copy.deepcopy(base), run_dir=wd, device=device,
        tracker=tracker, checkpoint_extra=lambda: {"config": resolved_config(cfg)},
        schedule=continuation_schedule(cfg.optim, init), budget=Budget(max_epoch=cfg.pruning.warmup_epochs),
    )
    log.info("warm-up: %d epochs of plain training before pruning starts", cfg.pruning.warmup_epochs)
    trainer.fit()
    return trainer.model.eval(), str(wd / "checkpoint_last.pt")


def _prune(cfg: DictConfig, rd: Path, data: Any, base, init: dict[str, Any], tracker, device: torch.device,
           source: str):
    """Steps 1-4 on ``base`` (loaded from ``source``); returns (pruned model, history entry)."""
    from pet.pruning.gates import gate_groups, to_gated
    from pet.distill.losses import DistillationLoss
    from pet.pruning.removal import remove_pruned, verify_removal
    from pet.pruning.shrink import ShrinkHook
    from pet.training.trainer import Budget, Trainer

    p, s = cfg.pruning, cfg.shrink
    history: list[dict[str, Any]] = list(init.get("pruning_history", []))
    resume = None
    if (rd / LAST).exists() and not cfg.trainer.reset:
        resume = load_checkpoint(rd / LAST)
        state = resume.get("pruning_state")
        if state is None or state["fingerprint"] != _fingerprint(cfg):
            raise CheckpointError(
                f"{rd / LAST} belongs to another prune command; use another run folder (paths.run_dir=...) "
                "or trainer.reset=true to start over"
            )
        gated = model_from_checkpoint(resume)
        log.info("resuming the pruning period from %s", rd / LAST)
    else:
        _check_chain(cfg, history)
        gated = to_gated(base, layernorm=p.layernorm).to(device)
        seed_everything(cfg.trainer.seed)
        state = _select(cfg, data, base, gated, history, device)
    gated = gated.to(device)
    seed_rank(cfg.trainer.seed)  # each rank its own dropout stream (a resume restores the saved RNG)
    groups = [g for g in gate_groups(gated) if g.name in set(state["groups"])]
    hook = ShrinkHook(gated, groups, state["selection"], s.type, s.unit, p.pruning_period, s.final_value,
                      period_updates=p.period_updates)

    if p.pruning_period > 0 or p.period_updates > 0:
        # The period is the training: bounded, and never cut by early stopping.
        budget = Budget(max_epoch=0 if p.period_updates else p.pruning_period,
                        max_update=p.period_updates or cfg.trainer.max_update,
                        max_time_minutes=cfg.trainer.max_time_minutes, patience=0)
        teacher = kd_teacher(cfg, base, history, data).to(device) if p.kd_alpha > 0 else None
        loss = DistillationLoss(teacher, data.tgt_dict.pad, alpha=p.kd_alpha, beta=0.0, temperature=p.kd_temperature,
                                label_smoothing=cfg.optim.label_smoothing)
        trainer = Trainer.for_data(
            data,
            resume=resume,
            cfg=cfg,
            budget=budget,
            model=gated,
            run_dir=rd,
            device=device,
            tracker=tracker,
            loss_fn=loss,
            hooks=[hook],
            checkpoint_extra=lambda: {"config": resolved_config(cfg), "pruning_state": state},
            schedule=continuation_schedule(cfg.optim, init),
        )
        trainer.fit()
        last_lr = trainer.state.last_lr
    else:
        last_lr = final_lr(init)
    if not hook.finish():
        log.warning(
            "the pruning period stopped after %d of %d %ss (trainer.max_update/max_time_minutes); "
            "the selected units were set to 0 before removal",
            hook.done, hook.schedule.total, hook.schedule.unit,
        )
    gated.eval()
    small = remove_pruned(gated)
    diff, diff_fp32 = verify_removal(gated, small, _verify_batches(cfg, data.split("valid")), p.verify_tolerance,
                                     data.tgt_dict.pad)
    log.info("removal preserved outputs: max |Δ log-prob| %.2e in float64 (tolerance %g), %.2e in float32, "
             "on validation batches", diff, p.verify_tolerance, diff_fp32)

    target = state["target"]
    achieved = small.num_parameters()
    entry = {
        "targets": p.targets,
        "iteration": int(p.iteration),
        "pruning_iter": int(p.pruning_iter),
        "compression_rate": float(p.compression_rate),
        "origin_spec": state["origin_spec"],
        "origin_parameters": int(target["origin_parameters"]),
        "keep_ratio": float(target["keep_ratio"]),
        "emb_level": float(target["emb_level"]),
        "heads_ffn_level": float(target["heads_ffn_level"]),
        "target_parameters": float(target["target_parameters"]),
        "requested_rate": float(target["target_rate"]),
        "achieved_rate": achieved / target["origin_parameters"],
        "parameters_before": base.num_parameters(),
        "parameters_after": achieved,
        "stage_keep_ratio": float(state["plan"]["keep_ratio"]),
        "shrink": [s.type, s.unit],
        "pruning_period": int(p.pruning_period),
        "period_updates": int(p.period_updates),
        "importance": p.importance,
        "period_complete": hook.complete,
        "removal_max_logprob_diff": diff,
        "removal_max_logprob_diff_fp32": diff_fp32,
        "init_from": str(cfg.init_from),
        "origin_checkpoint": origin_checkpoint(source, history),
    }
    if not is_main_process():
        return small, entry
    save_checkpoint(
        {
            "spec": small.spec.to_dict(),
            "model": small.state_dict(),
            "src_dict": data.src_dict.to_list(),
            "tgt_dict": data.tgt_dict.to_list(),
            "config": resolved_config(cfg),
            "pruning_history": history + [entry],
            "mlflow_run_id": getattr(tracker, "run_id", None),
            "last_lr": last_lr,
        },
        rd / PRUNED,
    )
    return small, entry


def _report(cfg: DictConfig, data: Any, base, small, device: torch.device) -> dict[str, Any]:
    from pet.pruning.report import bleu_function, compare, measure_pair

    p = cfg.pruning
    bleu_fn = None
    if p.report_bleu:
        bleu_fn = bleu_function(
            data.split(cfg.generation.split), data.src_dict, data.tgt_dict, cfg.generation, device, p.bleu_sentences
        )
    before, after = measure_pair(cfg, base.to(device), small.to(device), bleu_fn)
    return compare(before, after)


# --------------------------------------------------------------------- run


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
                         metrics={**last.metrics, "iteration_achieved_rates": [r.metrics["achieved_rate"] for r in results]},
                         run_id=last.run_id)
    write_result(rd, result)
    return result


def _iteration_config(cfg: DictConfig, iteration: int, directory: Path, init_from: str) -> DictConfig:
    sub = copy.deepcopy(cfg)
    sub.pruning.iteration, sub.paths.run_dir, sub.init_from = iteration, str(directory), str(init_from)
    return sub


def _run_iteration(cfg: DictConfig) -> StageResult:
    from pet.pruning.report import format_report

    if not cfg.init_from:
        raise ConfigError("stage=prune needs init_from=<checkpoint to prune> (a trained plain or pruned model)")
    rd = run_dir(cfg)
    done = read_result(rd)
    if done is not None and done.stage == "prune" and done.checkpoint and Path(done.checkpoint).exists():
        log.info("%s is already pruned (%s); nothing to do", rd, done.checkpoint)
        return done
    configure_threads(cfg.trainer.num_threads)
    device = select_device(cfg.trainer.device)
    data = load_data(cfg)
    init = load_checkpoint(cfg.init_from)
    check_same_vocab(init, data, cfg.init_from)
    base = model_from_checkpoint(init).to(device).eval()
    if base.spec.gated:
        raise CheckpointError(
            f"{cfg.init_from} is a gated mid-pruning checkpoint; pass a trained plain model or a prune run's {PRUNED}"
        )

    pruned_ckpt: Optional[dict[str, Any]] = load_checkpoint(rd / PRUNED) if (rd / PRUNED).exists() else None
    last = rd / LAST
    resume_id = None
    if pruned_ckpt is not None:
        resume_id = pruned_ckpt.get("mlflow_run_id")
    elif last.exists() and not cfg.trainer.reset:
        resume_id = load_checkpoint(last).get("mlflow_run_id")
    period = (f"{cfg.pruning.period_updates} updates" if cfg.pruning.period_updates > 0
              else f"{cfg.pruning.pruning_period} epochs")
    log.info("pruning %s (%s parameters): targets=%s, compression_rate=%s, shrink=%s/%s over %s",
             cfg.init_from, f"{base.num_parameters():,}", cfg.pruning.targets, cfg.pruning.compression_rate,
             cfg.shrink.type, cfg.shrink.unit, period)

    with tracked_run(cfg, resume_run_id=resume_id) as tracker:
        if pruned_ckpt is not None:
            log.info("%s exists; skipping to the report", rd / PRUNED)
            small = model_from_checkpoint(pruned_ckpt).to(device)
            entry = pruned_ckpt["pruning_history"][-1]
        else:
            source = cfg.init_from
            if cfg.pruning.warmup_epochs > 0:
                base, source = _warm_up(cfg, rd, data, base, init, tracker, device)
            small, entry = _prune(cfg, rd, data, base, init, tracker, device, source)
        small.eval()
        if not is_main_process():  # distributed job: rank 0 measures and reports
            return StageResult(stage="prune", metric_name="achieved_rate", metric=entry["achieved_rate"],
                               checkpoint=str(rd / PRUNED))
        rows = _report(cfg, data, base, small, device)
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
        text = format_report(title, rows, rate) + "\n" + _shape_lines(small)
        print("\n" + text + "\n", flush=True)
        atomic_write_text(rd / "prune_report.txt", text + "\n")
        atomic_write_text(rd / "prune_report.json", json.dumps(metrics, indent=2, default=str))
        tracker.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        tracker.log_artifact(rd / "prune_report.txt")
        metric_name, metric = ("bleu", rows["bleu_after"]) if "bleu_after" in rows else ("achieved_rate", entry["achieved_rate"])
        result = StageResult(
            stage="prune",
            metric_name=metric_name,
            metric=metric,
            checkpoint=str(rd / PRUNED),
            metrics={**metrics, "shape": _shape(small)},
            run_id=tracker.run_id,
        )
        write_result(rd, result)
    return result


def _shape(model) -> dict[str, Any]:
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


def _shape_lines(model) -> str:
    lines = []
    for side, st in (("encoder", model.spec.encoder), ("decoder", model.spec.decoder)):
        attn = sorted({(l.self_attn.qk_dim, l.self_attn.vo_dim) for l in st.layers})
        lines.append(
            f"{side} after: width {st.embed_dim} (of {st.embed_scale_dim}), FFN {[l.ffn_dim for l in st.layers]}, "
            f"self-attention {st.layers[0].self_attn.heads} heads x (qk, vo) {attn}"
        )
    return "\n".join(lines)
