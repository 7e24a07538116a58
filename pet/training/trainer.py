"""The training loop every training stage shares (pretrain, prune, finetune, distill).

What differs between stages is composed in, not subclassed: a ``LossFn``
(cross-entropy, KD, warm-up) and ``TrainHook`` objects (SRP freezes units and
shrinks connectivity parameters after each update). The loop itself owns
batching, accumulation, clipping, the LR schedule, validation, early stopping
and checkpoints that resume bit-exactly (model, optimizer, RNG, data position).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from pet.checkpoint import save_checkpoint
from pet.data.batch import Batch
from pet.data.batching import TokenBatchSampler
from pet.errors import CheckpointError, ConfigError
from pet.runtime import rng_state, set_rng_state
from pet.training.checkpoints import best_on_disk, better, keep_epoch_checkpoints
from pet.training.criterion import LN2, LabelSmoothedCrossEntropy, LossFn
from pet.training.distributed import any_rank, from_rank0, summed
from pet.training.preemption import PreemptionGuard
from pet.training.progress import UpdateWindow, log_plan, log_update, progress_bar
from pet.training.schedule import make_schedule
from pet.training.state import Budget, TrainState
from pet.training.validation import log_validation, validation_bleu, validation_loss

log = logging.getLogger(__name__)


class TrainHook:
    """Extension points of the loop; every method is optional."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def after_backward(self, trainer: "Trainer") -> None: ...
    def after_update(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    def __init__(
        self,
        *,
        cfg: Any,
        model: nn.Module,
        train_data: Any,
        valid_data: Any,
        src_dict: Any,
        tgt_dict: Any,
        run_dir: Path,
        device: torch.device,
        tracker: Any,
        loss_fn: Optional[LossFn] = None,
        hooks: Sequence[TrainHook] = (),
        checkpoint_extra: Optional[Callable[[], dict[str, Any]]] = None,
        trainable: Optional[Iterable[nn.Parameter]] = None,
        schedule: Optional[Callable[[int], float]] = None,
        budget: Optional[Budget] = None,
    ):
        self.cfg, self.tcfg, self.ocfg = cfg, cfg.trainer, cfg.optim
        self.run_dir = Path(run_dir)
        self.device = device
        self.model = model.to(device)
        self.train_data, self.valid_data = train_data, valid_data
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        self.tracker = tracker
        self.pad = tgt_dict.pad
        self.ce = LabelSmoothedCrossEntropy(self.ocfg.label_smoothing, self.pad)
        self.loss_fn: LossFn = loss_fn or self.ce
        self.hooks = list(hooks)
        self.checkpoint_extra = checkpoint_extra or (lambda: {})
        self.state = TrainState()
        # Stages that continue a trained model pass their own (training.schedule.continuation_schedule).
        self.schedule = schedule or make_schedule(self.ocfg)
        self.budget = budget or Budget.from_config(self.tcfg)
        params = [p for p in (trainable if trainable is not None else model.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.schedule(0), betas=tuple(self.ocfg.betas),
                                           eps=self.ocfg.eps, weight_decay=self.ocfg.weight_decay)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.is_main = self.rank == 0
        self.ddp_model: nn.Module = self.model
        if self.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.amp_dtype = None
        self.scaler = None
        if device.type == "cuda" and self.tcfg.amp:
            # Native bf16 only (Ampere+): emulated bf16 on older GPUs is slow, and they get fp16 + GradScaler.
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        self.train_sampler = TokenBatchSampler(
            train_data.src_sizes, train_data.tgt_sizes, max_tokens=self.tcfg.max_tokens,
            max_sentences=self.tcfg.max_sentences, seed=self.tcfg.seed, batch_size_multiple=self.tcfg.batch_size_multiple,
        )
        self.valid_sampler = TokenBatchSampler(
            valid_data.src_sizes, valid_data.tgt_sizes, max_tokens=self.tcfg.max_tokens,
            max_sentences=self.tcfg.max_sentences, shuffle=False,
        )
        self._fit_started = time.perf_counter()
        self._wall_before = 0.0
        self.guard = PreemptionGuard()
        self._resumed = False
        # checkpoint_best.pt of an earlier run in this folder: replaced only by a better model.
        self._best_on_disk: Optional[float] = None

    @classmethod
    def for_data(cls, data: Any, resume: Optional[dict[str, Any]] = None, **kwargs: Any) -> "Trainer":
        """A trainer on a prepared corpus's train/valid splits and dictionaries,
        restored from ``resume`` (a checkpoint_last.pt) when given."""
        trainer = cls(train_data=data.split("train"), valid_data=data.split("valid"), src_dict=data.src_dict,
                      tgt_dict=data.tgt_dict, **kwargs)
        if resume is not None:
            trainer.load_state_dict(resume)
        return trainer

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "trainer": asdict(self.state),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["trainer"])
        for hook, hs in zip(self.hooks, ckpt.get("hooks", [])):
            hook.load_state_dict(hs)
        # Rank 0's saved streams; other ranks reseed from (seed, update) and their rank.
        set_rng_state(ckpt["rng"], reseed=self.tcfg.seed * 100_003 + self.state.num_updates)
        self._resumed = True

    def continue_schedule_from(self, ckpt: dict[str, Any], source: str) -> None:
        """Carry over another run's optimizer moments and update count (not its
        epoch, data position or RNG): the LR schedule continues from there.

        For a second phase of one model's training (PET's KD after its warm-up),
        like fairseq restoring a checkpoint without --reset-optimizer."""
        if ckpt.get("spec") != self.model.spec.to_dict():
            raise CheckpointError(
                f"{source} holds a different model shape, so its optimizer state cannot continue here; "
                "set distill.continue_schedule=false to start a fresh optimizer"
            )
        if "optimizer" not in ckpt or "trainer" not in ckpt:
            raise CheckpointError(f"{source} has no optimizer state to continue; set distill.continue_schedule=false")
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        # load_state_dict also restores the other run's betas/eps/weight decay:
        # keep its moments and update count, but this stage's hyper-parameters.
        for group, own in zip(self.optimizer.param_groups, hyper):
            group.update(own)
        self.state.num_updates = int(ckpt["trainer"]["num_updates"])
        if self.budget.max_update and self.state.num_updates >= self.budget.max_update:
            # Otherwise the stage would end before its first update, with no model to hand on.
            raise ConfigError(
                f"{source} ends at update {self.state.num_updates} and a continued schedule counts those updates, "
                f"so trainer.max_update={self.budget.max_update} leaves nothing to train; set trainer.max_update to "
                f"{self.state.num_updates} plus the updates this stage should make, or distill.continue_schedule=false"
            )

    def save(self, name: str) -> Path:
        path = self.run_dir / name
        if not self.is_main:
            return path
        state = {
            "spec": self.model.spec.to_dict(),
            "model": self.model.state_dict(),
            "src_dict": self.src_dict.to_list(),
            "tgt_dict": self.tgt_dict.to_list(),
            "mlflow_run_id": getattr(self.tracker, "run_id", None),
            **self.state_dict(),
            **self.checkpoint_extra(),
        }
        save_checkpoint(state, path)
        return path

    # ------------------------------------------------------------------- loop
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _batch(self, dataset: Any, indices: list[int]) -> Batch:
        return dataset.collate(indices).to(self.device)

    def _wall(self) -> float:
        return self._wall_before + time.perf_counter() - self._fit_started

    def train_step(self, batches: list[list[int]], stand_in: Optional[list[int]] = None) -> dict[str, float]:
        """One optimizer update over this rank's share of the update's batches
        (gradient accumulation). A rank with no batch left at the end of an
        epoch still takes part in the update's collectives: it runs
        ``stand_in`` with weight 0, so every rank makes the same steps."""
        self.ddp_model.train()
        weight = 1.0
        if not batches:
            if stand_in is None:
                raise ValueError("train_step needs batches, or a stand_in batch for a rank with none")
            batches, weight = [stand_in], 0.0
        collated = [self._batch(self.train_data, indices) for indices in batches]
        ntokens = sum(b.ntokens for b in collated) if weight else 0
        total_tokens = summed([ntokens], torch.long, self.device)[0] if self.world_size > 1 else ntokens
        sums: dict[str, float] = {}
        for i, batch in enumerate(collated):
            sync = contextlib.nullcontext()
            if self.world_size > 1 and i < len(batches) - 1:
                sync = self.ddp_model.no_sync()
            with sync:
                with self._autocast():
                    loss, logs = self.loss_fn(self.ddp_model, batch)
                # Divide by the tokens of the whole update: gradients equal a
                # single big batch's, however it is split across steps/ranks.
                scaled = loss * (weight * self.world_size / max(total_tokens, 1))
                if self.scaler:
                    self.scaler.scale(scaled).backward()
                else:
                    scaled.backward()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + weight * v
        for hook in self.hooks:
            hook.after_backward(self)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.ocfg.clip_norm > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.ocfg.clip_norm)
        else:
            gnorm = torch.linalg.vector_norm(
                torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])
            )
        lr = self.schedule(self.state.num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.state.last_lr = lr
        if self.scaler:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scaler.get_scale() < scale:
                # inf/nan gradients: GradScaler skipped the step and lowered its
                # scale. As in fairseq, that is no update: the counter, the LR
                # schedule and the hooks (shrinking) do not advance.
                self.optimizer.zero_grad(set_to_none=True)
                log.info("fp16 gradient overflow: step skipped, loss scale now %g", self.scaler.get_scale())
                return {"skipped": 1.0, "lr": lr}
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.num_updates += 1
        self.state.target_tokens += total_tokens
        for hook in self.hooks:
            hook.after_update(self)
        if self.world_size > 1:
            keys = sorted(sums)
            sums = dict(zip(keys, summed([sums[k] for k in keys], torch.float64, self.device)))
            ntokens = total_tokens
        out = {k: v / max(ntokens, 1) / LN2 for k, v in sums.items()}
        out.update(gnorm=float(gnorm), lr=lr, ntokens=float(total_tokens))
        return out

    def validate(self) -> dict[str, float]:
        """Loss, nll and perplexity on the validation split (base 2, per target token)."""
        return validation_loss(self.model, self.ce, self.valid_data, self.valid_sampler, self.device, self._autocast)

    def validate_bleu(self) -> float:
        """Beam-search BLEU on the validation split (generation.max_examples caps
        the sentences, since decoding costs far more than the loss)."""
        return validation_bleu(self.model, self.valid_data, self.src_dict, self.tgt_dict, self.cfg.generation,
                               self.device)

    def fit(self) -> TrainState:
        if self.state.finished:
            log.info("training already finished (%s); nothing to do", self.state.stop_reason)
            return self.state
        with PreemptionGuard() as self.guard:
            return self._fit()

    def _preempted(self) -> bool:
        flag = self.guard.received is not None
        # Every rank must stop at the same update or collectives would hang.
        return any_rank(flag, self.device) if self.world_size > 1 else flag

    def _leave_if_preempted(self) -> None:
        """On a preemption signal (to any rank): checkpoint, then exit (hand_over never returns)."""
        if self._preempted():
            self.state.wall_seconds = self._wall()
            self.save("checkpoint_last.pt")
            if self.world_size > 1:
                dist.barrier()
            self.guard.hand_over()

    def _spent(self) -> str:
        """Why the run must stop now (``Budget.spent``), the same on every rank:
        clocks differ between processes, and a rank that stopped on its own
        time while the others trained on would leave them waiting in a collective."""
        wall = self._wall()
        if self.world_size > 1 and self.budget.max_time_minutes:
            wall = from_rank0(wall, self.device)
        return self.budget.spent(self.state.num_updates, wall)

    def _fit(self) -> TrainState:
        s, t, b = self.state, self.tcfg, self.budget
        self._fit_started, self._wall_before = time.perf_counter(), s.wall_seconds
        for hook in self.hooks:
            hook.on_fit_start(self)
        if self.is_main:
            log_plan(pairs=len(self.train_data), batches=len(self.train_sampler), max_tokens=t.max_tokens,
                     updates_per_epoch=math.ceil(len(self.train_sampler) / self.world_size / t.update_freq),
                     schedule=self.schedule, num_updates=s.num_updates, budget=b)
            if not self._resumed:
                self._best_on_disk = best_on_disk(self.run_dir, t.best_checkpoint_metric)
        while not s.finished:
            if b.max_epoch and s.epoch > b.max_epoch:
                self._finish("max_epoch")
                break
            # Checked before any update too: a run resumed from a checkpoint
            # written just before it would have finished (preempted on its last
            # update, killed during its last validation) finishes there instead
            # of training past its budget.
            if b.patience and s.bad_epochs >= b.patience:
                self._finish("patience")
                break
            stop = self._spent()
            if stop and s.batch_index == 0:  # spent by the end of the last epoch, whose validation stands
                self._finish(stop)
                break
            # Every rank walks the same global batch list: an update takes the
            # next world_size * update_freq batches, rank r the r-th of every
            # world_size, so the ranks always agree on the number of updates
            # (a last, short group leaves some ranks none: they stand in with
            # weight 0) and the result equals one process with
            # update_freq * world_size on the same batches.
            batches = self.train_sampler.batches_for_epoch(s.epoch)
            per_update = self.world_size * t.update_freq
            bar = progress_bar(t.progress_bar, self.is_main, len(batches), s.batch_index, s.epoch)
            window = UpdateWindow()
            while not stop and s.batch_index < len(batches):
                group = batches[s.batch_index : s.batch_index + per_update]
                started = time.perf_counter()
                logs = self.train_step(group[self.rank :: self.world_size], stand_in=group[0])
                s.train_seconds += time.perf_counter() - started
                s.batch_index += len(group)
                if logs.get("skipped"):  # no update was made: nothing to log, save or count
                    self._leave_if_preempted()
                    stop = self._spent()
                    continue
                window.add(logs)
                if bar is not None:
                    bar.update(len(group))
                    bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", lr=f"{logs['lr']:.2e}")
                elapsed = window.elapsed()
                if s.num_updates % t.log_interval == 0 or (t.log_seconds and elapsed >= t.log_seconds):
                    metrics = window.metrics(elapsed)
                    if self.is_main:
                        if bar is None:
                            log_update(s.epoch, s.num_updates, metrics)
                        self.tracker.log_metrics(metrics, step=s.num_updates)
                    window.reset()
                if t.save_interval_updates and s.num_updates % t.save_interval_updates == 0:
                    s.wall_seconds = self._wall()
                    self.save("checkpoint_last.pt")
                self._leave_if_preempted()
                stop = self._spent()
                if stop:
                    break
            if bar is not None:
                bar.close()
            if stop:
                # Mid-epoch stop: validate so every run ends with a comparable number.
                self._end_of_epoch(complete=s.batch_index >= len(batches))
                self._finish(stop)
                break
            self._end_of_epoch(complete=True)
        return s

    def _beats_best_on_disk(self, value: float) -> bool:
        if self._best_on_disk is None:
            return True
        beats = better(self.tcfg.best_checkpoint_metric, value, self._best_on_disk)
        if beats:
            self._best_on_disk = None
        return beats

    def _end_of_epoch(self, complete: bool) -> None:
        s = self.state
        if complete:
            for hook in self.hooks:
                hook.on_epoch_end(self)
        metrics = self.validate()
        if self.world_size > 1:
            # Rank 0's numbers decide best checkpoint and early stopping on every
            # rank: a last-bit difference must not stop one rank and not another.
            metrics = {k: self._shared(v) for k, v in metrics.items()}
        by_bleu = self.tcfg.best_checkpoint_metric == "bleu"
        if self.tcfg.validate_bleu or by_bleu:
            metrics["valid_bleu"] = self._shared(self.validate_bleu() if self.is_main else 0.0)
        # checkpoint_best.pt and early stopping follow trainer.best_checkpoint_metric.
        improved = s.record_validation(metrics, complete, by_bleu, self.budget.patience_min_delta)
        s.wall_seconds = self._wall()
        metrics.update(
            epoch=s.epoch,
            best_valid_loss=s.best_valid_loss,
            train_wall_s=s.train_seconds,
            train_tokens_per_s=s.target_tokens / max(s.train_seconds, 1e-9),
        )
        if self.is_main:
            log_validation(s, metrics, complete)
            self.tracker.log_metrics(metrics, step=s.num_updates)
        if complete:
            s.epoch += 1
            s.batch_index = 0
        if improved and self._beats_best_on_disk(metrics["valid_bleu"] if by_bleu else s.last_valid_loss):
            self.save("checkpoint_best.pt")
        self.save("checkpoint_last.pt")
        if complete and self.is_main:
            keep_epoch_checkpoints(self.run_dir, self.tcfg, s.epoch - 1,
                                   metrics["valid_bleu"] if by_bleu else s.last_valid_loss, self.save)

    def _shared(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (decisions such as early stopping must agree)."""
        return value if self.world_size == 1 else from_rank0(value, self.device)

    def _finish(self, reason: str) -> None:
        self.state.finished, self.state.stop_reason = True, reason
        self.save("checkpoint_last.pt")
        if self.is_main:
            log.info("training finished: %s after %d updates", reason, self.state.num_updates)
