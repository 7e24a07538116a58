"""The table of stages: ``stage.name`` -> what runs it and how it is wired.

Everything that treats stages differently reads this table: dispatch, config
validation (the allowed ``stage.name`` values), adopting a checkpoint's data
and model config, the pipeline's hand-over of a model from step to step, and
whether a sweep's jobs nest under an MLflow parent run. Adding a stage is one
module with ``run(cfg) -> StageResult`` plus one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """How one stage is wired.

    ``module``: the recipe module, imported when the stage runs (so composing
    a config does not import every stage's dependencies).
    ``from_checkpoint``: starts from ``init_from``; runs on the checkpoint's
    own data and model config unless the command line names one, and in a
    pipeline receives the latest earlier step's checkpoint when it names none.
    ``produces_model``: its ``StageResult.checkpoint`` is a new model, which a
    pipeline hands to the next step that starts from a checkpoint (evaluate's
    is the model it scored, not a new one).
    ``sweep_parent``: in a ``--multirun`` sweep its jobs nest under the sweep's
    MLflow parent run (a report over a sweep is not one of its jobs).
    """

    module: str
    from_checkpoint: bool = False
    produces_model: bool = False
    sweep_parent: bool = True


STAGES: dict[str, Stage] = {
    "prepare": Stage("pet.stages.prepare"),
    "pretrain": Stage("pet.stages.pretrain", produces_model=True),
    "finetune": Stage("pet.stages.finetune", from_checkpoint=True, produces_model=True),
    "prune": Stage("pet.stages.prune", from_checkpoint=True, produces_model=True),
    "distill": Stage("pet.stages.distill", from_checkpoint=True, produces_model=True),
    "evaluate": Stage("pet.stages.evaluate", from_checkpoint=True),
    "summary": Stage("pet.stages.summary"),
    "pipeline": Stage("pet.stages.pipeline"),
    "report": Stage("pet.stages.report", sweep_parent=False),
    "translate": Stage("pet.stages.translate", from_checkpoint=True),
    "average": Stage("pet.stages.average", from_checkpoint=True, produces_model=True),
    "export": Stage("pet.stages.export", from_checkpoint=True),
}


def stage(name: str) -> Stage:
    """The table entry for ``name`` (validation has already rejected unknown names)."""
    return STAGES[name]
