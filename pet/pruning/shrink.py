"""Selective regularization: freeze the selected units, shrink their c to 0.

:class:`ShrinkHook` plugs into :class:`pet.training.trainer.Trainer`:

* **Freezing.** Every weight entry a selected unit owns (its rows and columns
  in the ownership map of :func:`pet.pruning.gates.dim_ownership`: embedding
  columns, the rows/columns of every Linear that reads or writes the unit, its
  LayerNorm entries and biases) is frozen. ``after_backward`` zeroes those
  gradients (before clipping, so they do not count in the norm) and
  snapshots the entries; ``after_update`` writes the snapshot back and zeroes
  the optimizer moments (``exp_avg``, ``exp_avg_sq``). Writing back is what
  makes frozen mean *does not move*: AdamW's decoupled weight decay
  (p ← p − lr·wd·p) moves a parameter even when its gradient is zero.
* **Shrinking.** The selected entries of each connectivity buffer follow a
  closed-form schedule of the number of units done k (updates, or epochs with
  ``shrink.unit=epoch``) out of the period's total N:

  - arithmetic: c = 1 − k/N (the original's c ← c − 1/N, without drift);
  - geometric: c = final_value^(k/N) (c ← c·q with q = final_value^(1/N));
  - oneshot: c = 0 from the start (the ablation: no regularization);

  (:data:`SCHEDULES`, the ``shrink.type`` choices) and at k = N, c is set to
  exactly 0. Update k+1 of a per-step period trains
  at value(k); epoch e of a per-epoch period trains at value(e) (its value
  applies from the epoch's start), so the last epoch trains at c = 0, the
  level the units are removed at. With ``unit=step``, N is counted from
  the trainer's real batch sampler over the period's epochs (divided by
  ``update_freq`` and the world size), never assumed.

The counter is saved in the checkpoint (``state_dict``), so a resumed run
continues the schedule where it stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor

from pet.models.transformer import TransformerModel
from pet.pruning.gates import GateGroup, dim_ownership, set_gates
from pet.training.trainer import TrainHook

log = logging.getLogger(__name__)


def arithmetic(fraction: float, final_value: float) -> float:
    return 1.0 - fraction


def geometric(fraction: float, final_value: float) -> float:
    return final_value ** fraction


def oneshot(fraction: float, final_value: float) -> float:
    return 0.0


@dataclass(frozen=True)
class Schedule:
    """A shrink schedule: ``curve(k/N, final_value)`` is c after k of N units, for
    0 <= k < N (c is exactly 0 from k = N on, whatever the curve).

    ``at_once``: c is 0 from the start, so the period's length and unit change
    nothing and the schedule is complete at any point of the period."""

    curve: Callable[[float, float], float]
    at_once: bool = False

    def value(self, done: int, total: int, final_value: float) -> float:
        if self.at_once or total <= 0 or done >= total:
            return 0.0
        return self.curve(done / total, final_value)


# shrink.type -> schedule; a new schedule is one curve and one entry here.
SCHEDULES: dict[str, Schedule] = {
    "arithmetic": Schedule(arithmetic),
    "geometric": Schedule(geometric),
    "oneshot": Schedule(oneshot, at_once=True),
}


@dataclass
class ShrinkSchedule:
    type: str  # a SCHEDULES key
    unit: str  # step | epoch
    total: int  # N: updates (unit=step) or epochs (unit=epoch) in the period
    final_value: float = 1e-5

    def __post_init__(self) -> None:
        if self.type not in SCHEDULES:
            raise ValueError(f"unknown shrink type {self.type!r}; choose one of: {', '.join(SCHEDULES)}")

    @property
    def at_once(self) -> bool:
        return SCHEDULES[self.type].at_once

    def value(self, done: int) -> float:
        """c of a selected unit after ``done`` units of the period."""
        return SCHEDULES[self.type].value(done, self.total, self.final_value)


def steps_in_period(trainer: Any, epochs: int) -> int:
    """Optimizer updates the trainer will make in ``epochs`` epochs, from its
    sampler: ``world_size * update_freq`` batches per update, the same number
    on every rank."""
    per_update = getattr(trainer, "world_size", 1) * trainer.tcfg.update_freq
    return sum(math.ceil(len(trainer.train_sampler.batches_for_epoch(epoch)) / per_update)
               for epoch in range(1, epochs + 1))


@dataclass
class _Frozen:
    param: torch.nn.Parameter
    rows: Optional[Tensor]
    cols: Optional[Tensor]


class ShrinkHook(TrainHook):
    def __init__(
        self,
        model: TransformerModel,
        groups: Sequence[GateGroup],
        selection: Mapping[str, Sequence[int]],
        shrink_type: str,
        unit: str,
        period_epochs: int,
        final_value: float = 1e-5,
        period_updates: int = 0,
    ):
        if not model.spec.gated:
            raise ValueError("ShrinkHook needs a gated model")
        self.model = model
        self.selection = {g.name: torch.tensor(sorted(selection.get(g.name, [])), dtype=torch.long) for g in groups}
        self.selection = {k: v for k, v in self.selection.items() if v.numel()}
        self.period_epochs = period_epochs
        self.period_updates = period_updates  # > 0: the period in updates (unit=step)
        self.schedule = ShrinkSchedule(shrink_type, unit, period_epochs if unit == "epoch" else 0, final_value)
        self.done = 0
        self._resumed_total: Optional[int] = None  # the period length a resumed run was saved with
        self._saved: list[tuple[Optional[Tensor], Optional[Tensor]]] = []
        own = dim_ownership(model)
        self.frozen: list[_Frozen] = []
        for name, p in own.params.items():
            idx = [self.selection.get(g) if g is not None else None for g in own.owners[name]]
            rows = idx[0] if idx else None
            cols = idx[1] if len(idx) > 1 else None
            if rows is not None or cols is not None:
                self.frozen.append(_Frozen(p, rows, cols))

    # ------------------------------------------------------------ schedule
    @property
    def complete(self) -> bool:
        return self.schedule.at_once or self.done >= self.schedule.total

    def current_value(self) -> float:
        """c the selected units train at now. Per step, update k+1 trains at
        value(k). Per epoch, an epoch's value applies from its start: epoch e of
        P trains at value(e), so the last epoch trains at the final value (0),
        and a one-epoch period is not one epoch at c = 1."""
        ahead = 1 if self.schedule.unit == "epoch" else 0
        return self.schedule.value(self.done + ahead)

    def apply(self, value: Optional[float] = None) -> None:
        set_gates(self.model, self.selection, self.current_value() if value is None else value)

    def finish(self) -> bool:
        """Set every selected c to exactly 0; False if the period was cut short."""
        complete = self.complete
        self.apply(0.0)
        return complete

    # --------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: Any) -> None:
        if self.schedule.unit == "step":
            total = self.period_updates or steps_in_period(trainer, self.period_epochs)
            resumed_total = self._resumed_total
            if resumed_total and total != resumed_total:
                # Resumed on another number of ranks: an epoch-long period has
                # another number of updates now. Go on from the same fraction
                # of the period, so that c still reaches 0 at its end.
                done = round(self.done * total / resumed_total)
                log.warning("the pruning period was %d updates and is %d now (another world size); "
                            "shrinking resumes at update %d of %d", resumed_total, total, done, total)
                self.done = done
            self.schedule.total = total
        log.info(
            "shrinking %d groups (%s, per %s) over %d %ss; c now %.3g",
            len(self.selection),
            self.schedule.type,
            self.schedule.unit,
            self.schedule.total,
            self.schedule.unit,
            self.current_value(),
        )
        self.apply()

    @torch.no_grad()
    def after_backward(self, trainer: Any) -> None:
        self._saved = []
        for f in self.frozen:
            p, rows, cols = f.param, f.rows, f.cols
            rows = rows.to(p.device) if rows is not None else None
            cols = cols.to(p.device) if cols is not None else None
            if p.grad is not None:
                if rows is not None:
                    p.grad[rows] = 0
                if cols is not None:
                    p.grad[:, cols] = 0
            self._saved.append((p[rows].clone() if rows is not None else None, p[:, cols].clone() if cols is not None else None))

    @torch.no_grad()
    def after_update(self, trainer: Any) -> None:
        optimizer = getattr(trainer, "optimizer", None)
        for f, (saved_rows, saved_cols) in zip(self.frozen, self._saved):
            p = f.param
            rows = f.rows.to(p.device) if f.rows is not None else None
            cols = f.cols.to(p.device) if f.cols is not None else None
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            moments = [state[k] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if torch.is_tensor(state.get(k))]
            if rows is not None:
                p[rows] = saved_rows
                for m in moments:
                    m[rows] = 0
            if cols is not None:
                p[:, cols] = saved_cols
                for m in moments:
                    m[:, cols] = 0
        self._saved = []
        if self.schedule.unit == "step":
            self.done += 1
            self.apply()

    def on_epoch_end(self, trainer: Any) -> None:
        if self.schedule.unit == "epoch":
            self.done += 1
            self.apply()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.schedule.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = int(state.get("done", 0))
        self.schedule.total = int(state.get("total", self.schedule.total))
        self._resumed_total = self.schedule.total
        self.apply()
