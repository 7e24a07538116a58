"""Hydra callback that gives every multirun one MLflow parent run.

Registered in ``conf/config.yaml``::

    hydra:
      callbacks:
        sweep:
          _target_: pet.sweep.callbacks.SweepCallback

``on_multirun_start`` runs once, in the submitting process, before any job is
launched (Hydra calls it before it builds the sweeper and launcher): it creates
the experiment and the parent run, tagged with the sweep's overrides, and writes
``<sweep dir>/mlflow_parent.json`` for the jobs to find. ``on_multirun_end``
closes the parent (FINISHED, or FAILED if a child failed) and writes the sweep
report. Hydra does not call ``on_multirun_end`` when a job fails (the sweeper
raises first), so the parent is also closed -- as FAILED -- from an ``atexit``
hook in that case.

The callback object is pickled with every submitit job: it holds plain strings
only, and the report (torch, matplotlib) is imported only when the sweep ends.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pet.errors import PetError
from pet.stages.registry import stage
from pet.sweep.collect import FAILED, collect_from_sweep_dir
from pet.sweep.tracking import finish_sweep_parent, start_sweep_parent

log = logging.getLogger(__name__)



class SweepCallback(Callback):
    def __init__(self, enabled: bool = True, report_on_end: bool = True) -> None:
        self.enabled = bool(enabled)
        self.report_on_end = bool(report_on_end)
        self._info: Optional[dict[str, Any]] = None  # mlflow_parent.json content
        self._sweep_dir: Optional[str] = None
        self._report_cfg: Optional[dict[str, Any]] = None
        self._closed = False

    # ------------------------------------------------------------------ hooks

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or not stage(config.stage.name).sweep_parent:
            return
        if int(os.environ.get("RANK", "0") or 0) > 0:
            return  # a multirun under torchrun: rank 0 alone opens (and closes) the sweep's parent run
        self._sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        self._report_cfg = OmegaConf.to_container(config.report, resolve=True)  # type: ignore[assignment]
        self._closed = False
        overrides = [str(o) for o in config.hydra.overrides.task]
        try:
            launcher = str(config.hydra.runtime.choices.get("hydra/launcher", "basic"))
        except Exception:
            launcher = "?"
        if HydraConfig.initialized():
            launcher = str(HydraConfig.get().runtime.choices.get("hydra/launcher", launcher))
        try:
            self._info = start_sweep_parent(
                config.tracking,
                self._sweep_dir,
                run_name=f"sweep:{config.run_name}",
                overrides=overrides,
                tags={"sweep.launcher": launcher, "sweep.run_name": str(config.run_name)},
            )
        except PetError as e:
            # Hydra turns a callback's exceptions into warnings and goes on; a
            # sweep whose tracking store is unusable must stop before it submits.
            log.error("error: %s", e)
            raise SystemExit(2) from e
        if self._info is not None:
            log.info("sweep parent run %s in %s (experiment %s); jobs attach to it via %s/mlflow_parent.json",
                     self._info["run_id"], self._info["tracking_uri"], self._info["experiment"], self._sweep_dir)
        # Closes the parent if the multirun dies before on_multirun_end.
        atexit.register(self._close_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sweep_dir is None or self._closed:
            return
        self._close(completed=True)

    # --------------------------------------------------------------- internals

    def _close_at_exit(self) -> None:
        if self._sweep_dir is not None and not self._closed:
            log.warning("the multirun stopped before its end (a job failed or it was interrupted)")
            self._close(completed=False)

    def _close(self, completed: bool) -> None:
        self._closed = True
        failed_dirs = 0
        report_path = None
        if self.report_on_end:
            try:
                from pet.sweep.report import (  # noqa: PLC0415 - loads torch (via pet.checkpoint), which the submitting process does not otherwise need
                    ReportOptions,
                    make_report,
                )

                opts = ReportOptions.from_config(self._report_cfg or {})
                opts.log_to_mlflow = False  # logged below, after the status is known
                rep = make_report(sweep_dir=self._sweep_dir, options=opts)
                failed_dirs = sum(1 for j in rep.jobs if j.status == FAILED)
                report_path = rep.out_dir
                print(f"\nsweep report ({rep.out_dir}):\n{rep.table}\n", flush=True)
            except Exception as e:  # a report problem must not hide the sweep's outcome
                log.warning("sweep report not written: %s", e)
        else:
            try:
                failed_dirs = sum(1 for j in collect_from_sweep_dir(self._sweep_dir) if j.status == FAILED)
            except Exception:
                pass
        if self._info is None:
            return
        try:
            if report_path is not None:
                from pet.sweep.publish import log_report_files  # noqa: PLC0415 - loads torch, like the report above

                log_report_files(self._info["tracking_uri"], self._info["run_id"], report_path)
            finish_sweep_parent(self._info, completed=completed, local_failures=failed_dirs)
        except Exception as e:
            log.warning("could not close sweep parent run %s: %s", self._info.get("run_id"), e)

    def __getstate__(self) -> dict[str, Any]:
        # Jobs never close the parent: only the submitting process does.
        return {**self.__dict__, "_closed": True}
