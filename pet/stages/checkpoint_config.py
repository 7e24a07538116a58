"""A checkpoint's own config: what ``init_from=<checkpoint>`` alone brings.

A checkpoint carries the resolved config it was trained with. Stages that
start from one (``from_checkpoint`` in the stage table) run on its data and
model config unless the command line names them, so a user never has to
repeat the corpus a model was trained on, and run names and tags name the
model that actually runs.
"""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pet.checkpoint import load_checkpoint
from pet.config.schema import DataConfig, ModelConfig
from pet.errors import ConfigError
from pet.stages.registry import stage

log = logging.getLogger(__name__)


def command_line_overrides() -> Optional[list[str]]:
    """This job's command-line overrides; None when composed in code (tests, benchmarks)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _names(overrides: list[str], group: str) -> bool:
    """Whether the command line sets ``group`` (``group=...`` or ``group.key=...``)."""
    return any(o.lstrip("+~").startswith((f"{group}=", f"{group}.")) for o in overrides)


def trained_config(path: str) -> dict[str, Any]:
    """The resolved config a checkpoint was trained with ({} if it has none)."""
    p = Path(path)
    return _trained_config(str(p.resolve()), p.stat().st_mtime)


@functools.lru_cache(maxsize=4)
def _trained_config(path: str, mtime: float) -> dict[str, Any]:
    return load_checkpoint(path).get("config") or {}


def adopt_checkpoint_config(cfg: DictConfig, recipe: ModuleType) -> DictConfig:
    """``cfg`` with the data and model config of the checkpoint(s) the stage
    starts from. Both come from ``init_from``, unless the recipe module
    defines ``config_checkpoints(cfg) -> (data checkpoint, model checkpoint)``
    (either None: keep this config's)."""
    if not stage(cfg.stage.name).from_checkpoint:
        return cfg
    sources = getattr(recipe, "config_checkpoints", None)
    data_from, model_from = sources(cfg) if sources else (cfg.init_from, cfg.init_from)
    return with_checkpoint_model(with_checkpoint_data(cfg, data_from), model_from)


def with_checkpoint_data(cfg: DictConfig, path: Optional[str]) -> DictConfig:
    """``cfg`` with ``data`` set to what checkpoint ``path`` was trained on, so
    that ``init_from=<checkpoint>`` alone is enough; an explicit ``data``
    setting on the command line stays, and must name the same corpus."""
    path = str(path) if path else None
    if path is None or not Path(path).is_file():
        return cfg  # the stage itself says what is missing
    trained = trained_config(path).get("data")
    overrides = command_line_overrides()
    if not trained or overrides is None:
        return cfg
    if _names(overrides, "data"):
        mine = (cfg.data.name, cfg.data.src_lang, cfg.data.tgt_lang)
        theirs = (trained.get("name"), trained.get("src_lang"), trained.get("tgt_lang"))
        if mine != theirs:
            raise ConfigError(
                f"{path} was trained on data {theirs[0]} ({theirs[1]}->{theirs[2]}), but this command asks for "
                f"{mine[0]} ({mine[1]}->{mine[2]}); drop the data settings (the checkpoint knows its data) "
                "or pass a checkpoint trained on that corpus"
            )
        return cfg
    adopted = copy.deepcopy(cfg)
    adopted.data = OmegaConf.merge(OmegaConf.structured(DataConfig), trained)
    log.info("data: %s (%s->%s), the corpus %s was trained on", adopted.data.name, adopted.data.src_lang,
             adopted.data.tgt_lang, path)
    return adopted


def with_checkpoint_model(cfg: DictConfig, path: Optional[str]) -> DictConfig:
    """``cfg`` with ``model`` set to the config the model in ``path`` was built
    from (unless the command line names one), so that run names, tags and
    logs name the model that actually runs, not the default ``model=``."""
    if not path or not Path(str(path)).is_file():
        return cfg
    overrides = command_line_overrides()
    if overrides is None or _names(overrides, "model"):
        return cfg
    built = trained_config(str(path)).get("model")
    if not built:
        return cfg
    adopted = copy.deepcopy(cfg)
    adopted.model = OmegaConf.merge(OmegaConf.structured(ModelConfig), built)
    return adopted
