"""Stage dispatch: ``stage.name`` -> the recipe module that runs it.

An explicit table rather than import-time registration: adding a stage is one
line here plus one module with ``run(cfg) -> StageResult``.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from pet.stages.common import StageResult, announce, run_lock, with_checkpoint_data, with_checkpoint_model

STAGE_MODULES = {
    "prepare": "pet.stages.prepare",
    "pretrain": "pet.stages.pretrain",
    "finetune": "pet.stages.pretrain",
    "evaluate": "pet.stages.evaluate",
    "summary": "pet.stages.summary",
    "pipeline": "pet.stages.pipeline",
    "prune": "pet.stages.prune",
    "distill": "pet.stages.distill",
    "report": "pet.stages.report",
}


def run_stage(cfg: DictConfig) -> StageResult:
    module = importlib.import_module(STAGE_MODULES[cfg.stage.name])
    cfg = with_checkpoint_model(with_checkpoint_data(cfg))
    with run_lock(cfg):
        result = module.run(cfg)
    announce(cfg, result)
    return result
