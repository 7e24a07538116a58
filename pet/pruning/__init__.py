"""SRP: structured pruning with connectivity parameters.

One module per job, imported on use:

* :mod:`pet.pruning.gates` — plain <-> gated models; the gate groups (``c_emb``,
  ``c_qk``, ``c_vo``, ``c_fc``) and which weight rows/columns each one owns;
* :mod:`pet.pruning.importance` — the importance criteria (-dL/dc over a seeded
  sample of batches, its magnitude, random), one table of them;
* :mod:`pet.pruning.rate` — compression rate -> keep ratio -> prune counts;
* :mod:`pet.pruning.selection` — which units to prune, and the one-shot
  scores -> plan -> selection step;
* :mod:`pet.pruning.shrink` — the shrink schedules, and the trainer hook that
  freezes selected units and shrinks their connectivity parameters to 0;
* :mod:`pet.pruning.origin` — the chain's unpruned model (the KD teacher,
  distilled from with :class:`pet.distill.losses.DistillationLoss` at β = 0);
* :mod:`pet.pruning.removal` — physical slicing into a smaller dense model;
* :mod:`pet.pruning.report` — params, FLOPs, latency, BLEU before vs after.

``stage=prune`` (:mod:`pet.stages.prune`) puts them together.
"""
