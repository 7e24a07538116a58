"""How a training run reports its progress: the plan it logs before its first
update, the optional tqdm bar over an epoch's batches, and the training
metrics averaged over the updates between two log lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

from tqdm import tqdm

from pet.training.state import Budget

log = logging.getLogger(__name__)


def log_plan(*, pairs: int, batches: int, max_tokens: int, updates_per_epoch: int,
             schedule: Callable[[int], float], num_updates: int, budget: Budget) -> None:
    """What a run will do, before its first update: batches, schedule, budget."""
    log.info("%d training pairs in %d batches of <= %d tokens: %d updates per epoch",
             pairs, batches, max_tokens, updates_per_epoch)
    describe = getattr(schedule, "describe", lambda: type(schedule).__name__)
    log.info("LR schedule: %s; update %d trains at lr %.3g", describe(), num_updates, schedule(num_updates))
    t = budget
    limits = [f"{n} {what}" for n, what in ((t.max_epoch, "epochs"), (t.max_update, "updates"),
                                             (t.max_time_minutes, "minutes")) if n]
    if limits:
        log.info("budget: %s (whichever comes first)%s", ", ".join(limits),
                 f"; {t.early_stopping()}" if t.patience else "")
    elif t.patience:
        log.warning("no budget set: training runs until %s (set trainer.max_epoch, trainer.max_update or "
                    "trainer.max_time_minutes to bound it)", t.early_stopping())
    else:
        log.warning("no budget set: training never stops by itself; set trainer.max_epoch, trainer.max_update, "
                    "trainer.max_time_minutes or trainer.patience")


def progress_bar(mode: str, show: bool, total: int, initial: int, epoch: int) -> Any:
    """A tqdm bar over an epoch's batches, or None: ``mode`` (trainer.progress_bar)
    "tqdm" always draws one, "auto" only on a terminal; ``show`` False (a rank
    other than 0) never does."""
    use_bar = show and (mode == "tqdm" or (mode == "auto" and sys.stderr.isatty()))
    if not use_bar:
        return None
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)


def log_update(epoch: int, num_updates: int, metrics: dict[str, float]) -> None:
    """One line of training metrics (``train_*``, as :meth:`UpdateWindow.metrics` gives them)."""
    log.info("epoch %d | update %d | %s", epoch, num_updates, " | ".join(f"{k[6:]} {v:.4g}" for k, v in metrics.items()))


class UpdateWindow:
    """Training logs summed over the updates since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.tokens = 0
        self.updates = 0
        self.started = time.perf_counter()

    def add(self, logs: dict[str, float]) -> None:
        """One update's logs (as :meth:`Trainer.train_step` returns them)."""
        self.tokens += int(logs["ntokens"])
        self.updates += 1
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def metrics(self, elapsed: float) -> dict[str, float]:
        """train_<log> averaged per update, and train_tokens_per_s over ``elapsed`` seconds."""
        metrics = {f"train_{k}": v / self.updates for k, v in self.sums.items() if k != "ntokens"}
        metrics["train_tokens_per_s"] = self.tokens / max(elapsed, 1e-9)
        return metrics
