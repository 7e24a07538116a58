"""PET: a parameter-efficient student, warmed up on a simplified task, then distilled.

* :mod:`pet.distill.losses` — the warm-up objective (4-class token labels from
  the baseline teacher) and the distillation objective (CE + T²·KL + hidden-state
  MSE), both as ``loss_fn(model, batch)`` for the shared Trainer.
* :mod:`pet.distill.teacher` — loading and checking the teacher checkpoint.
* The student's shape (two physical layers per side, each used twice, permuted
  encoder projections, a shared decoder query projection) is plain model
  config: ``conf/model/pet_student.yaml``; the model implements the sharing.
* ``stage=distill`` (:mod:`pet.stages.distill`) runs either objective.
"""

from pet.distill.losses import (
    DistillationLoss,
    WarmupLoss,
    default_layer_map,
    four_way_log_probs,
    warmup_labels,
)

__all__ = ["DistillationLoss", "WarmupLoss", "default_layer_map", "four_way_log_probs", "warmup_labels"]
