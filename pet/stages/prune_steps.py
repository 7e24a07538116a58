"""The pruning run of ``stage=prune`` (recipe steps 1-4): selection, the
pruning period and physical removal, with what must match for a resume.

``stage=prune`` (:mod:`pet.stages.prune`) wraps these in its recipe: the
iterations, the run folder, tracking and the report.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pet.data.batching import TokenBatchSampler, eval_batches
from pet.distill.losses import DistillationLoss
from pet.errors import CheckpointError, ConfigError
from pet.pruning.gates import check_prunable, dim_ownership, gate_groups, groups_for, meta_model, to_gated
from pet.pruning.importance import CRITERIA, ImportanceContext
from pet.pruning.origin import origin_checkpoint
from pet.pruning.rate import chain_target
from pet.pruning.removal import remove_pruned, verify_removal
from pet.pruning.selection import select_for_rate, selection_summary
from pet.pruning.shrink import ShrinkHook
from pet.runtime import is_main_process, seed_everything, seed_rank
from pet.stages.common import origin_teacher, resolved_config
from pet.stages.fit import resume_checkpoint
from pet.training.schedule import continuation_schedule, final_lr
from pet.training.state import Budget
from pet.training.trainer import Trainer

log = logging.getLogger(__name__)

PRUNED = "checkpoint_pruned.pt"
LAST = "checkpoint_last.pt"


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
        log.info("KD teacher: this run's input model %s%s", cfg.init_from,
                 "" if history else " (the chain's unpruned model)")
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
                f"pruning.iteration={p.iteration} continues iteration {p.iteration - 1} of "
                f"pruning.targets={p.targets}; init_from must be that run's {PRUNED}"
            )
    if p.targets == "emb" and any(h["targets"] in ("heads_ffn", "all") for h in history):
        log.warning("pruning the width after heads/FFN were pruned: the chain will end below pruning.compression_rate")
    if history and abs(float(history[0]["compression_rate"]) - float(p.compression_rate)) > 1e-12:
        log.warning(
            "this chain started with pruning.compression_rate=%s; this run asks for %s of the unpruned model's "
            "parameters",
            history[0]["compression_rate"],
            p.compression_rate,
        )


def importance_batches(cfg: DictConfig, train: Any) -> list:
    """The seeded sample of training batches -dL/dc is taken over (benchmarks reuse it)."""
    sampler = TokenBatchSampler(
        train.src_sizes, train.tgt_sizes, max_tokens=cfg.trainer.max_tokens,
        max_sentences=cfg.trainer.max_sentences, seed=cfg.pruning.importance_seed,
    )
    picked = sampler.batches_for_epoch(1)[: cfg.pruning.importance_batches]
    return [train.collate(b) for b in picked]


def _verify_batches(cfg: DictConfig, valid: Any) -> list:
    batches = eval_batches(valid.src_sizes, valid.tgt_sizes, cfg.trainer.max_tokens, cfg.trainer.max_sentences)
    n = len(batches)
    # Spread over the length range: short and long sentences both.
    k = min(cfg.pruning.verify_batches, n)
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    return [valid.collate(batches[i]) for i in picks]


def _select(cfg: DictConfig, data: Any, base, gated, history: list[dict[str, Any]],
            device: torch.device) -> dict[str, Any]:
    """Importance, rate and selection for this run: the ``pruning_state`` saved with every checkpoint."""
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


def warm_up(cfg: DictConfig, rd: Path, data: Any, base, init: dict[str, Any], tracker, device: torch.device):
    """``pruning.warmup_epochs`` of plain training of the input model before its
    importance is taken (the original's --warming-up), in ``<run_dir>/warmup``
    (resumable; a finished warm-up is only reloaded). Returns the trained model
    and its checkpoint, which the chain then counts as its unpruned origin."""
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


def prune_and_remove(cfg: DictConfig, rd: Path, data: Any, base, init: dict[str, Any], tracker, device: torch.device,
           source: str):
    """Steps 1-4 on ``base`` (loaded from ``source``); returns (pruned model, history entry)."""
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
