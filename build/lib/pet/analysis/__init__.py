"""Model analysis: parameter counts, FLOPs per token and translation latency.

* :mod:`pet.analysis.params` — parameters per component, shared tensors once;
* :mod:`pet.analysis.flops` — FLOPs per source/target token, measured with
  ``torch.utils.flop_counter`` while the model runs as incremental decoding
  really runs it;
* :mod:`pet.analysis.latency` — wall-clock translation speed;
* :mod:`pet.analysis.summary` — params + FLOPs as one dict and one report.

Submodules are imported on use; this package imports nothing heavy itself.
"""
