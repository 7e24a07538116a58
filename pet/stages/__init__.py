"""Stage dispatch: ``stage.name`` -> the recipe module the stage table names.

Every stage runs the same way: its checkpoint's data and model config are
adopted (for stages that start from one), its run folder is locked for this
process, its module's ``run(cfg) -> StageResult`` does the work, and the
folder it left is announced.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from pet.stages.checkpoint_config import adopt_checkpoint_config
from pet.stages.common import StageResult
from pet.stages.lifecycle import announce, run_lock
from pet.stages.registry import STAGES, Stage, stage

__all__ = ["STAGES", "Stage", "StageResult", "run_stage", "stage"]


def run_stage(cfg: DictConfig) -> StageResult:
    module = importlib.import_module(stage(cfg.stage.name).module)
    cfg = adopt_checkpoint_config(cfg, module)
    with run_lock(cfg):
        result = module.run(cfg)
    announce(cfg, result)
    return result
