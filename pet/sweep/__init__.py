"""Sweeps: MLflow grouping of a Hydra multirun, and the sweep report.

* :mod:`pet.sweep.callbacks` -- the Hydra callback (``hydra.callbacks.sweep`` in
  ``conf/config.yaml``) that creates one MLflow parent run per multirun before any
  job is submitted, records it in ``<sweep dir>/mlflow_parent.json``, and closes
  it (FINISHED / FAILED) when the sweep ends.
* :mod:`pet.sweep.tracking` -- what a job reads to attach to that parent, and the
  parent's bookkeeping (light: no MLflow import at module level; the parent-run
  record itself is :func:`pet.tracking.parent_run`, shared with pipelines).
* :mod:`pet.sweep.report` -- ``pet stage=report``: the table (Markdown/CSV) and the
  BLEU-vs-size / BLEU-vs-latency plots with their Pareto fronts, put together from
  :mod:`~pet.sweep.collect` (the jobs), :mod:`~pet.sweep.metrics` (their names),
  :mod:`~pet.sweep.retime` (timing checkpoints), :mod:`~pet.sweep.plots` (the list of
  plots), :mod:`~pet.sweep.pareto`, :mod:`~pet.sweep.render` (table, report.md) and
  :mod:`~pet.sweep.publish` (files to MLflow).
"""
