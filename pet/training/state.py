"""What a training run knows about itself: its progress (saved with every
checkpoint, so a resumed run continues where it stopped) and its budget (when
it stops)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class TrainState:
    epoch: int = 1
    batch_index: int = 0  # next batch of ``epoch`` to train on
    num_updates: int = 0
    train_seconds: float = 0.0  # inside optimizer updates only (for tokens/s)
    wall_seconds: float = 0.0  # whole loop incl. validation (for max_time_minutes)
    target_tokens: int = 0
    best_valid_loss: float = math.inf
    best_valid_bleu: float = -math.inf
    last_valid_loss: float = math.inf
    bad_epochs: int = 0
    # The value the patience count measures gains against: the metric when the
    # count last restarted (None: the best so far, as in a run saved before it
    # existed). Gains below trainer.patience_min_delta accumulate against it.
    patience_reference: Optional[float] = None
    finished: bool = False
    stop_reason: str = ""
    last_lr: float = 0.0  # rate of the last update (a continuing stage starts from it)
    # one entry per validation: epoch, updates, valid loss/nll (and BLEU), the
    # learning curve that travels with every checkpoint
    curve: list = field(default_factory=list)

    def record_validation(self, metrics: dict[str, float], complete: bool, by_bleu: bool,
                          min_delta: float = 0.0) -> bool:
        """Note a validation's ``metrics`` (valid_loss, valid_nll_loss, and
        valid_bleu when ``by_bleu``): best values, epochs without improvement
        and the learning curve. Returns whether the model improved, by BLEU when
        ``by_bleu`` (trainer.best_checkpoint_metric), else by the loss.

        The patience count restarts when the metric beats ``patience_reference``
        (its value at the last restart) by more than ``min_delta``, as Keras'
        and Lightning's ``min_delta`` do: small gains add up, so a steady slow
        descent restarts it every few epochs and only a plateau, less than
        ``min_delta`` gained over ``patience`` epochs, ends the run. With
        ``min_delta`` 0 the reference is the best so far (fairseq's patience)."""
        self.last_valid_loss = metrics["valid_loss"]
        if by_bleu:
            value, best = metrics["valid_bleu"], self.best_valid_bleu
            self.best_valid_bleu = max(best, value)
        else:
            value, best = self.last_valid_loss, self.best_valid_loss
        self.best_valid_loss = min(self.best_valid_loss, self.last_valid_loss)
        reference = best if self.patience_reference is None else self.patience_reference
        gain = (value - reference) if by_bleu else (reference - value)
        if gain > min_delta:
            self.bad_epochs, self.patience_reference = 0, value
        else:
            self.bad_epochs += 1
        self.curve.append({"epoch": self.epoch, "complete": complete, "updates": self.num_updates,
                           **{k: metrics[k] for k in ("valid_loss", "valid_nll_loss", "valid_bleu") if k in metrics}})
        return (value > best) if by_bleu else (value < best)


@dataclass
class Budget:
    """When a run stops: epochs, updates, wall minutes (0 = unbounded) and
    early stopping (epochs without improvement; 0 = off). A stage whose
    training length is its method's (a pruning period) passes its own instead
    of rewriting the config it logs."""

    max_epoch: int = 0
    max_update: int = 0
    max_time_minutes: float = 0.0
    patience: int = 0
    patience_min_delta: float = 0.0  # a smaller gain does not restart the patience count

    @classmethod
    def from_config(cls, tcfg: Any) -> Budget:
        return cls(int(tcfg.max_epoch), int(tcfg.max_update), float(tcfg.max_time_minutes), int(tcfg.patience),
                   float(tcfg.patience_min_delta))

    def early_stopping(self) -> str:
        """The early-stopping rule in words ("" when off)."""
        if not self.patience:
            return ""
        gain = f"a gain of more than {self.patience_min_delta:g}" if self.patience_min_delta else "improvement"
        return f"early stopping after {self.patience} epochs without {gain}"

    def spent(self, num_updates: int, wall_seconds: float) -> str:
        """Why a run at ``num_updates`` after ``wall_seconds`` must stop within
        its epoch ("max_update", "max_time"), or "" if it may go on."""
        if self.max_update and num_updates >= self.max_update:
            return "max_update"
        if self.max_time_minutes and wall_seconds >= self.max_time_minutes * 60:
            return "max_time"
        return ""
