"""Early, readable validation of a composed config.

Structured configs already reject unknown keys and wrong types; this module
checks closed choices and ranges so that a bad value fails before any data is
read, with one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pet.errors import ConfigError
from pet.pruning.importance import CRITERIA
from pet.pruning.shrink import SCHEDULES
from pet.stages.registry import STAGES

CHOICES: dict[str, tuple[Any, ...]] = {
    "stage.name": tuple(STAGES),
    "data.kind": ("iwslt14", "parallel_text", "preprocessed", "demo"),
    "optim.scheduler": ("inverse_sqrt", "constant"),
    "optim.continue_scheduler": ("constant", "pretrain"),
    "trainer.device": ("auto", "cpu", "cuda"),
    "trainer.progress_bar": ("auto", "tqdm", "none"),
    "trainer.best_checkpoint_metric": ("loss", "bleu"),
    "tracking.backend": ("mlflow", "none"),
    "shrink.type": tuple(SCHEDULES),
    "shrink.unit": ("step", "epoch"),
    "pruning.targets": ("emb", "heads_ffn", "all"),
    "pruning.layernorm": ("weighted", "unweighted"),
    "pruning.importance": tuple(CRITERIA),
    "pruning.kd_teacher": ("origin", "previous"),
    "distill.mode": ("warmup", "kd", "none"),
    "generation.split": ("train", "valid", "test"),
    "translate.backend": ("pet", "ctranslate2"),
    "translate.compute_type": ("default", "auto", "float32", "float16", "bfloat16", "int8", "int8_float32",
                               "int8_float16", "int8_bfloat16", "int16"),
    "average.metric": (None, "loss", "bleu"),
    "export.format": ("ctranslate2",),
    "export.quantization": ("float32", "int8", "int8_float32"),
    "export.check_split": ("train", "valid", "test"),
}

# key -> (low, high, low_inclusive, high_inclusive); None = unbounded
RANGES: dict[str, tuple[Any, Any, bool, bool]] = {
    "model.encoder_layers": (1, None, True, True),
    "model.decoder_layers": (1, None, True, True),
    "model.encoder_embed_dim": (1, None, True, True),
    "model.decoder_embed_dim": (1, None, True, True),
    "model.encoder_heads": (1, None, True, True),
    "model.decoder_heads": (1, None, True, True),
    "model.dropout": (0.0, 1.0, True, False),
    "model.attention_dropout": (0.0, 1.0, True, False),
    "model.activation_dropout": (0.0, 1.0, True, False),
    "optim.lr": (0.0, None, False, True),
    "optim.label_smoothing": (0.0, 1.0, True, False),
    "optim.warmup_updates": (0, None, True, True),
    "optim.continue_warmup_updates": (0, None, True, True),
    "optim.continue_lr": (0.0, None, False, True),
    "trainer.max_tokens": (1, None, True, True),
    "trainer.update_freq": (1, None, True, True),
    "trainer.batch_size_multiple": (1, None, True, True),
    "trainer.patience_min_delta": (0.0, None, True, True),
    "generation.beam": (1, None, True, True),
    "pruning.compression_rate": (0.0, 1.0, False, False),
    "pruning.pruning_iter": (1, None, True, True),
    "pruning.pruning_period": (0, None, True, True),
    "pruning.period_updates": (0, None, True, True),
    "pruning.iteration": (0, None, True, True),
    "pruning.warmup_epochs": (0, None, True, True),
    "pruning.importance_batches": (1, None, True, True),
    "pruning.kd_alpha": (0.0, 1.0, True, True),
    "pruning.kd_temperature": (0.0, None, False, True),
    "pruning.verify_tolerance": (0.0, None, False, True),
    "pruning.verify_batches": (1, None, True, True),
    "pruning.bleu_sentences": (0, None, True, True),
    "pruning.latency_length": (1, None, True, True),
    "pruning.latency_repeats": (1, None, True, True),
    "shrink.final_value": (0.0, 1.0, False, False),
    "distill.alpha": (0.0, 1.0, True, True),
    "distill.temperature": (0.0, None, False, True),
    "distill.beta": (0.0, None, True, True),
    "distill.confident_correct": (0.0, 1.0, True, True),
    "distill.confident_wrong": (0.0, 1.0, True, True),
    "distill.warmup_label_smoothing": (0.0, 1.0, True, False),
    "data.bpe_merges": (0, None, True, True),
    "data.valid_every": (2, None, True, True),
    "report.latency_length": (1, None, True, True),
    "report.latency_repeats": (1, None, True, True),
    "translate.nbest": (1, None, True, True),
    "average.last_epochs": (0, None, True, True),
    "average.best": (0, None, True, True),
    "export.check_sentences": (0, None, True, True),
    "export.min_identical": (0.0, 1.0, True, True),
    "export.speed_length": (1, None, True, True),
    "export.speed_repeats": (1, None, True, True),
}


def _get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(
                f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, allowed))}"
            )
    for key, (low, high, low_inc, high_inc) in RANGES.items():
        value = _get(cfg, key)
        if value is None:  # optional keys (null = derived)
            continue
        too_low = low is not None and (value < low if low_inc else value <= low)
        too_high = high is not None and (value > high if high_inc else value >= high)
        if too_low or too_high:
            lo = "(-inf" if low is None else f"{'[' if low_inc else '('}{low}"
            hi = "inf)" if high is None else f"{high}{']' if high_inc else ')'}"
            raise ConfigError(f"{key}={value!r} is out of range; allowed: {lo}, {hi}")
    m = cfg.model
    for side in ("encoder", "decoder"):
        dim, heads = m[f"{side}_embed_dim"], m[f"{side}_heads"]
        if dim % heads:
            raise ConfigError(
                f"model.{side}_embed_dim={dim} is not divisible by model.{side}_heads={heads}; "
                "pick a head count that divides the width"
            )
    for role in m.encoder_attention_roles:
        if sorted(role) != ["k", "q", "v"]:
            raise ConfigError(
                f"model.encoder_attention_roles entry {role!r} is not a permutation of 'qkv'"
            )
    if m.encoder_attention_roles and m.encoder_layer_order and len(m.encoder_attention_roles) != len(
        m.encoder_layer_order
    ):
        raise ConfigError(
            "model.encoder_attention_roles must have one entry per model.encoder_layer_order entry "
            f"({len(m.encoder_attention_roles)} vs {len(m.encoder_layer_order)})"
        )
    if "pruning" in cfg and cfg.pruning.period_updates > 0 and cfg.shrink.unit == "epoch" \
            and not SCHEDULES[cfg.shrink.type].at_once:
        raise ConfigError(
            f"pruning.period_updates={cfg.pruning.period_updates} counts updates, but shrink.unit=epoch shrinks "
            "once per epoch; use shrink.unit=step, or pruning.pruning_period (epochs) with pruning.period_updates=0"
        )
    if "pruning" in cfg and cfg.pruning.report_engines and not cfg.pruning.report_latency:
        raise ConfigError(
            "pruning.report_engines=true times the engines, but pruning.report_latency=false turns timing off; "
            "set pruning.report_latency=true, or pruning.report_engines=false"
        )
    for key in ("pruning.latency_batch_sizes", "export.speed_batch_sizes", "report.latency_batch_sizes"):
        sizes = OmegaConf.select(cfg, key)
        if sizes is not None and (not sizes or any(bs < 1 for bs in sizes)):
            raise ConfigError(f"{key}={list(sizes)} must list batch sizes >= 1")
    if cfg.tracking.backend == "mlflow" and not cfg.tracking.uri:
        raise ConfigError("tracking.uri is empty; set it (e.g. sqlite:///outputs/mlflow.db) or use tracking=none")
