"""stage=prepare: raw or preprocessed text -> BPE text, dictionaries, token ids."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pet.data.prepare import prepare_data
from pet.data.prepared import load_prepared
from pet.stages.common import StageResult, data_dir, finish_stage
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> StageResult:
    out = data_dir(cfg)
    with tracked_run(cfg) as tracker:
        prepare_data(cfg.data, out)
        data = load_prepared(out)
        metrics = {"src_vocab": len(data.src_dict), "tgt_vocab": len(data.tgt_dict)}
        for split in ("train", "valid", "test"):
            metrics[f"{split}_pairs"] = len(data.split(split))
        tracker.log_artifact(out / "meta.json")
        log.info("data %s ready in %s: %s", cfg.data.name, out, ", ".join(f"{k} {v:,}" for k, v in metrics.items()))
        result = StageResult(stage="prepare", metric_name="src_vocab", metric=float(len(data.src_dict)),
                             metrics=metrics)
        return finish_stage(cfg, result, tracker)
