"""stage=prepare: raw or preprocessed text -> BPE text, dictionaries, token ids."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pet.stages.common import StageResult, data_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> StageResult:
    from pet.data.prepare import load_prepared, prepare_data

    out = data_dir(cfg)
    prepare_data(cfg.data, out)
    data = load_prepared(out)
    log.info("data %s ready in %s: %d/%d types", cfg.data.name, out, len(data.src_dict), len(data.tgt_dict))
    return StageResult(stage="prepare", metric_name="src_vocab", metric=float(len(data.src_dict)))
