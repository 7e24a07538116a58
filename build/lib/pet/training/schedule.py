"""Learning-rate schedules as pure functions of the update count.

Being stateless, they resume exactly from ``num_updates`` alone. Each one
describes itself in a line, which the trainer logs when training starts.

Training from scratch (pretrain) uses ``optim.scheduler``: fairseq's
inverse-sqrt with a long warm-up. Stages that continue a trained model with a
fresh optimizer (prune, finetune) must not start that warm-up again from 1e-7:
a pruning period of a few hundred updates would never reach a useful rate.
They use :func:`continuation_schedule` instead: a short linear warm-up to the
rate the input model's own training had reached, then constant (the original
SRP code ran these phases at a constant 5e-4).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class InverseSqrtSchedule:
    """Linear warm-up from ``warmup_init_lr`` to ``lr``, then lr·sqrt(warmup/step)."""

    def __init__(self, lr: float, warmup_updates: int, warmup_init_lr: float):
        self.lr, self.warmup, self.init_lr = lr, warmup_updates, warmup_init_lr

    def __call__(self, num_updates: int) -> float:
        if self.warmup > 0 and num_updates < self.warmup:
            return self.init_lr + num_updates * (self.lr - self.init_lr) / self.warmup
        return self.lr * (max(self.warmup, 1) ** 0.5) * max(num_updates, 1) ** -0.5

    def describe(self) -> str:
        return (f"inverse_sqrt: linear warm-up {self.init_lr:.3g} -> {self.lr:.3g} over {self.warmup} updates, "
                f"then {self.lr:.3g}*sqrt({max(self.warmup, 1)}/update)")


class ConstantSchedule:
    """``lr`` after an optional linear warm-up from ``warmup_init_lr``."""

    def __init__(self, lr: float, warmup_updates: int = 0, warmup_init_lr: float = 0.0, **_: Any):
        self.lr, self.warmup, self.init_lr = lr, warmup_updates, warmup_init_lr

    def __call__(self, num_updates: int) -> float:
        if self.warmup > 0 and num_updates < self.warmup:
            return self.init_lr + num_updates * (self.lr - self.init_lr) / self.warmup
        return self.lr

    def describe(self) -> str:
        warm = f" after a linear warm-up from {self.init_lr:.3g} over {self.warmup} updates" if self.warmup else ""
        return f"constant {self.lr:.3g}{warm}"


def make_schedule(optim_cfg: Any):
    """The from-scratch schedule ``optim.scheduler`` names."""
    if optim_cfg.scheduler == "constant":
        return ConstantSchedule(optim_cfg.lr)
    return InverseSqrtSchedule(optim_cfg.lr, optim_cfg.warmup_updates, optim_cfg.warmup_init_lr)


def final_lr(ckpt: Mapping[str, Any]) -> Optional[float]:
    """The learning rate a checkpoint's training had reached at its last update
    (recorded by the trainer, or recomputed from its config), None if unknown."""
    trainer = ckpt.get("trainer") or {}
    recorded = trainer.get("last_lr") or ckpt.get("last_lr")
    if recorded:
        return float(recorded)
    optim = (ckpt.get("config") or {}).get("optim")
    if optim and trainer.get("num_updates"):
        return float(make_schedule(OmegaConf.create(dict(optim)))(int(trainer["num_updates"]) - 1))
    return None


def continuation_schedule(optim_cfg: Any, init_ckpt: Optional[Mapping[str, Any]]):
    """The schedule of a stage that continues ``init_ckpt`` with a fresh optimizer.

    ``optim.continue_scheduler=constant``: linear warm-up over
    ``optim.continue_warmup_updates`` to ``optim.continue_lr`` (null: the input
    model's final rate, else ``optim.lr``), then constant.
    ``optim.continue_scheduler=pretrain``: ``optim.scheduler`` from scratch.
    """
    if optim_cfg.continue_scheduler == "pretrain":
        return make_schedule(optim_cfg)
    lr = optim_cfg.continue_lr
    if lr is None:
        lr = final_lr(init_ckpt) if init_ckpt is not None else None
        if lr is None:
            lr = optim_cfg.lr
            log.warning("the input checkpoint records no learning rate; continuing at optim.lr=%g "
                        "(set optim.continue_lr to choose)", lr)
    return ConstantSchedule(float(lr), optim_cfg.continue_warmup_updates, optim_cfg.warmup_init_lr)
