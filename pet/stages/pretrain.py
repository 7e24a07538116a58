"""stage=pretrain: label-smoothed CE training of a model from scratch.

The model comes from ``model=`` (random init), ``model.shape_from`` (the
layer shapes of a checkpoint, e.g. a pruned one, randomly initialised: the
dense baseline of the same size) or ``init_from`` (its weights, trained on).
Re-running the same command resumes from ``checkpoint_last.pt`` in the run
folder; a finished run is a no-op.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.models.spec import TransformerSpec, fresh_spec, spec_from_config
from pet.models.transformer import TransformerModel
from pet.runtime import seed_everything, seed_rank
from pet.stages.common import StageResult, check_same_vocab, finish_stage, resolved_config, setup_stage
from pet.stages.fit import best_checkpoint_state, check_resume_shape, make_trainer, resume_checkpoint, training_metrics
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)


def build_initial_model(cfg: DictConfig, data) -> TransformerModel:
    if cfg.init_from:
        ckpt = load_checkpoint(cfg.init_from)
        check_same_vocab(ckpt, data, cfg.init_from)
        return model_from_checkpoint(ckpt)
    if cfg.model.shape_from:
        shape = load_checkpoint(cfg.model.shape_from)
        check_same_vocab(shape, data, cfg.model.shape_from)
        log.info("model of the layer shapes of %s, randomly initialised", cfg.model.shape_from)
        return TransformerModel(fresh_spec(TransformerSpec.from_dict(shape["spec"])))
    spec = spec_from_config(cfg.model, len(data.src_dict), len(data.tgt_dict), data.tgt_dict.pad)
    return TransformerModel(spec)


def run(cfg: DictConfig) -> StageResult:
    setup = setup_stage(cfg)
    resume = resume_checkpoint(cfg, setup.run_dir)
    seed_everything(cfg.trainer.seed)
    # Same initial weights on every rank (DDP also broadcasts rank 0's), then
    # rank-specific dropout streams.
    model = build_initial_model(cfg, setup.data)
    seed_rank(cfg.trainer.seed)
    check_resume_shape(resume, model, setup.run_dir)
    log.info("model %s: %s parameters", cfg.model.name, f"{model.num_parameters():,}")
    extra = {"config": resolved_config(cfg)}
    with tracked_run(cfg, resume_run_id=resume.get("mlflow_run_id") if resume else None) as tracker:
        state = make_trainer(cfg, setup, model, tracker, resume=resume, extra=lambda: extra).fit()
        # What checkpoint_best.pt holds (possibly an earlier run's better model), not this run's best.
        best = best_checkpoint_state(setup.run_dir / "checkpoint_best.pt", state)
        result = StageResult(
            stage=cfg.stage.name,
            metric_name="best_valid_loss",
            metric=best["best_valid_loss"],
            checkpoint=str(setup.run_dir / "checkpoint_best.pt"),
            metrics={**training_metrics(state, best, model.num_parameters()), "valid_curve": state.curve},
        )
        return finish_stage(cfg, result, tracker)
