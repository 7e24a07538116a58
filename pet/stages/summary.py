"""stage=summary: parameters per component and FLOPs per token, no data needed.

The model comes from ``init_from`` (any pet checkpoint, pruned or shared) or,
without one, from the model config and vocabulary sizes
(``data.src_vocab_size``/``data.tgt_vocab_size``, else the prepared data's).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pet.analysis.summary import format_summary, summarize
from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.data.prepared import load_prepared
from pet.errors import ConfigError
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel
from pet.stages.common import StageResult, data_dir, finish_stage
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)


def _vocab_sizes(cfg: DictConfig) -> tuple[int, int]:
    if cfg.data.src_vocab_size and cfg.data.tgt_vocab_size:
        return cfg.data.src_vocab_size, cfg.data.tgt_vocab_size
    folder = data_dir(cfg)
    if not (folder / "meta.json").exists():
        raise ConfigError(
            "stage=summary needs vocabulary sizes: pass data.src_vocab_size=N data.tgt_vocab_size=M, "
            f"init_from=<checkpoint>, or prepare data={cfg.data.name} first"
        )
    data = load_prepared(folder)
    return len(data.src_dict), len(data.tgt_dict)


def run(cfg: DictConfig) -> StageResult:
    if cfg.init_from:
        model = model_from_checkpoint(load_checkpoint(cfg.init_from))
        name = str(cfg.init_from)
    else:
        src, tgt = _vocab_sizes(cfg)
        model = TransformerModel(spec_from_config(cfg.model, src, tgt))
        name = f"{cfg.model.name} ({src}/{tgt} types)"
    model.eval()
    info = summarize(model, name=name)
    print(f"\n{format_summary(info)}")
    flops = info["flops"]
    metrics = {
        "parameters": info["params"]["total"],
        "encoder_flops_per_src_token": flops["encoder_per_src_token"],
        "decoder_flops_per_tgt_token": flops["decoder_per_tgt_token"],
        "flops_per_tgt_token": flops["total_per_tgt_token"],
    }
    result = StageResult(stage="summary", metric_name="parameters", metric=float(metrics["parameters"]), metrics=metrics)
    with tracked_run(cfg) as tracker:
        return finish_stage(cfg, result, tracker)
