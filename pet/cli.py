"""The single entry point: ``pet [stage=...] [overrides]`` (also ``python -m pet``).

Composes the config, validates it, runs the selected stage and returns its main
metric, so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pet.config.resolvers import register as register_resolvers
from pet.config.schema import PetConfig
from pet.errors import PetError

ConfigStore.instance().store(name="pet_schema", node=PetConfig)
register_resolvers()
# The configs ship inside the package (a wheel holds them), so `pet` composes
# the same tree from any working directory; `conf` at the checkout's top is a
# link to this folder. A user's own folder composes on top with --config-dir.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
log = logging.getLogger("pet")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> Optional[float]:
    from pet.config.validate import validate  # noqa: PLC0415 - imports torch; `pet --help` and config errors stay fast
    from pet.runtime import init_distributed, setup_logging  # noqa: PLC0415 - imports torch; `pet --help` and config errors stay fast
    from pet.stages import run_stage  # noqa: PLC0415 - imports torch; `pet --help` and config errors stay fast
    from pet.training.preemption import requeue_on_pre_timeout_outside_training  # noqa: PLC0415 - with the stages

    setup_logging()
    try:
        validate(cfg)
        init_distributed()
        requeue_on_pre_timeout_outside_training()
        return run_stage(cfg).metric
    except PetError as e:
        log.error("error: %s", e)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(2)


def main() -> None:
    # `pet report <sweep dir> [overrides]` is shorthand for
    # `pet stage=report report.sweep_dir=<sweep dir> [overrides]`.
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        rest = [a if ("=" in a or a.startswith("-")) else f"report.sweep_dir={a}" for a in sys.argv[2:]]
        sys.argv = [sys.argv[0], "stage=report", *rest]
    app()


if __name__ == "__main__":
    main()
