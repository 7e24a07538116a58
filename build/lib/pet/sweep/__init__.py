"""Sweeps: MLflow grouping of a Hydra multirun, and the sweep report.

* :mod:`pet.sweep.callbacks` -- the Hydra callback (``hydra.callbacks.sweep`` in
  ``conf/config.yaml``) that creates one MLflow parent run per multirun before any
  job is submitted, records it in ``<sweep dir>/mlflow_parent.json``, and closes
  it (FINISHED / FAILED) when the sweep ends.
* :mod:`pet.sweep.tracking` -- what a job reads to attach to that parent, and the
  parent's bookkeeping (light: no MLflow import at module level).
* :mod:`pet.sweep.report` -- the table (Markdown/CSV) and the BLEU-vs-size /
  BLEU-vs-latency plots with their Pareto fronts (``pet stage=report``).
"""
