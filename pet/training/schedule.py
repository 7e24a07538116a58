"""Learning-rate schedules as pure functions of the update count.

Being stateless, they resume exactly from ``num_updates`` alone.
"""

from __future__ import annotations

from typing import Any


class InverseSqrtSchedule:
    """Linear warm-up from ``warmup_init_lr`` to ``lr``, then lr·sqrt(warmup/step)."""

    def __init__(self, lr: float, warmup_updates: int, warmup_init_lr: float):
        self.lr, self.warmup, self.init_lr = lr, warmup_updates, warmup_init_lr

    def __call__(self, num_updates: int) -> float:
        if self.warmup > 0 and num_updates < self.warmup:
            return self.init_lr + num_updates * (self.lr - self.init_lr) / self.warmup
        return self.lr * (max(self.warmup, 1) ** 0.5) * max(num_updates, 1) ** -0.5


class ConstantSchedule:
    def __init__(self, lr: float, **_: Any):
        self.lr = lr

    def __call__(self, num_updates: int) -> float:
        return self.lr


def make_schedule(optim_cfg: Any):
    if optim_cfg.scheduler == "constant":
        return ConstantSchedule(optim_cfg.lr)
    return InverseSqrtSchedule(optim_cfg.lr, optim_cfg.warmup_updates, optim_cfg.warmup_init_lr)
