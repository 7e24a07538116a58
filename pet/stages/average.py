"""stage=average: average a run's last or best checkpoints into checkpoint_avg.pt.

``init_from`` names the run folder (or any checkpoint in it);
``average.last_epochs=N`` averages its N newest ``checkpoint<epoch>.pt``,
``average.best=N`` its N best ``checkpoint.best_<metric>_<value>.pt``. The
result carries the inputs' config, dictionaries, text pipeline and history
(:mod:`pet.checkpoint_average`), so evaluate and translate run on it with
``init_from=<run folder>/checkpoint_avg.pt`` alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from pet.checkpoint import save_checkpoint
from pet.checkpoint_average import AVERAGE_NAME, average_checkpoints, best_n_checkpoints, last_epoch_checkpoints
from pet.errors import ConfigError
from pet.stages.common import StageResult, finish_stage, run_dir
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)


def selected_checkpoints(cfg: DictConfig) -> tuple[Path, list[Path]]:
    """(the run folder, the checkpoints to average) that ``cfg`` asks for."""
    a = cfg.average
    if not cfg.init_from:
        raise ConfigError("stage=average needs init_from=<run folder> (or one of its checkpoints), "
                          "and average.last_epochs=N or average.best=N")
    source = Path(str(cfg.init_from)).expanduser()
    if not source.exists():
        raise ConfigError(f"init_from={cfg.init_from} does not exist; pass a training run's folder or a checkpoint in it")
    # resolved: a run's `latest` link may point elsewhere later, the average's path must not
    folder = (source if source.is_dir() else source.parent).resolve()
    if (a.last_epochs > 0) == (a.best > 0):
        raise ConfigError("stage=average averages either the last epochs or the best checkpoints: set exactly one "
                          f"of average.last_epochs and average.best (now {a.last_epochs} and {a.best})")
    if a.last_epochs > 0:
        return folder, last_epoch_checkpoints(folder, int(a.last_epochs))
    return folder, best_n_checkpoints(folder, int(a.best), a.metric)


def run(cfg: DictConfig) -> StageResult:
    folder, paths = selected_checkpoints(cfg)
    out = Path(str(cfg.average.output)).expanduser() if cfg.average.output else folder / AVERAGE_NAME
    if out.resolve() in {p.resolve() for p in paths}:
        raise ConfigError(f"average.output={out} is one of the checkpoints being averaged; write elsewhere")
    run_dir(cfg)
    with tracked_run(cfg) as tracker:
        log.info("averaging %d checkpoints of %s: %s", len(paths), folder, ", ".join(p.name for p in paths))
        state = average_checkpoints(paths)
        save_checkpoint(state, out)
        log.info("wrote %s", out)
        result = StageResult(
            stage="average",
            metric_name="checkpoints",
            metric=float(len(paths)),
            checkpoint=str(out),
            metrics={"checkpoints": len(paths), "inputs": [str(p) for p in paths], "run_folder": str(folder)},
        )
        return finish_stage(cfg, result, tracker)
