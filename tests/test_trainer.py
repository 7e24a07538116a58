"""Training loop: it learns, it resumes bit-exactly, it stops where told."""

from pathlib import Path

import torch

from pet.checkpoint import load_checkpoint
from pet.stages import run_stage
from pet.stages.common import load_data
from pet.stages.pretrain import build_initial_model
from pet.training.trainer import Trainer, TrainHook
from tests.conftest import DEMO_DATA, compose_cfg

TRAIN = [*DEMO_DATA, "stage=pretrain", "model=transformer_tiny", "model.encoder_embed_dim=32",
         "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
         "trainer.max_tokens=600", "optim.warmup_updates=10", "optim.lr=2e-3", "trainer.log_interval=5"]


class CrashAfter(TrainHook):
    def __init__(self, n: int):
        self.n = n

    def after_update(self, trainer):
        if trainer.state.num_updates == self.n:
            raise KeyboardInterrupt("simulated preemption")


def make_trainer(cfg, hooks=()):
    data = load_data(cfg)
    torch.manual_seed(cfg.trainer.seed)
    model = build_initial_model(cfg, data)
    from pet.tracking import NullTracker

    return Trainer(cfg=cfg, model=model, train_data=data.split("train"), valid_data=data.split("valid"),
                   src_dict=data.src_dict, tgt_dict=data.tgt_dict, run_dir=Path(cfg.paths.run_dir),
                   device=torch.device("cpu"), tracker=NullTracker(), hooks=hooks)


def crash_and_resume(crashing, cfg):
    """Run ``crashing`` until its simulated kill, then a fresh trainer resumed from its checkpoint_last.pt."""
    try:
        crashing.fit()
    except KeyboardInterrupt:
        pass
    resumed = make_trainer(cfg)
    resumed.load_state_dict(load_checkpoint(Path(cfg.paths.run_dir) / "checkpoint_last.pt"))
    return resumed


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), f"{name} differs"


def test_resume_after_interruption_is_bit_identical(demo_root, tmp_path):
    common = [*TRAIN, "trainer.max_update=18", "trainer.save_interval_updates=4"]
    ref_cfg = compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/ref")
    ref = make_trainer(ref_cfg)
    n_batches = len(ref.train_sampler.batches_for_epoch(1))
    assert n_batches < 18, "the run must cross an epoch boundary to test the data position"
    ref.fit()

    cfg = compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/cut")
    crashing = make_trainer(cfg, hooks=[CrashAfter(10)])
    resumed = crash_and_resume(crashing, cfg)
    assert resumed.state.num_updates == 8  # the last periodic checkpoint before the crash
    resumed.fit()
    assert resumed.state.num_updates == ref.state.num_updates == 18
    assert_same_weights(ref.model, resumed.model)


def test_resumed_at_its_update_budget_it_trains_no_further(demo_root, tmp_path):
    """Killed during the final validation, after the periodic checkpoint at
    max_update: the resumed run validates and finishes, without update max_update+1."""
    common = [*TRAIN, "trainer.max_update=12", "trainer.save_interval_updates=12"]
    ref = make_trainer(compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/ref"))
    ref.fit()
    cfg = compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/cut")
    crashing = make_trainer(cfg)

    def killed():
        raise KeyboardInterrupt("killed during validation")

    crashing.validate = killed
    resumed = crash_and_resume(crashing, cfg)
    assert resumed.state.num_updates == 12 and not resumed.state.finished
    resumed.fit()
    assert resumed.state.finished and resumed.state.stop_reason == "max_update"
    assert resumed.state.num_updates == ref.state.num_updates == 12
    assert_same_weights(ref.model, resumed.model)


def test_pretrain_learns_and_rerun_is_a_noop(demo_root, tmp_path):
    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_epoch=3", f"paths.run_dir={tmp_path}")
    first = run_stage(cfg)
    ckpt = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert ckpt["trainer"]["finished"] and ckpt["trainer"]["epoch"] == 4
    curve = ckpt["trainer"]["curve"]  # the learning curve travels with the checkpoint
    assert [c["epoch"] for c in curve] == [1, 2, 3] and first.metrics["valid_curve"] == curve
    assert min(c["valid_loss"] for c in curve) == first.metrics["best_valid_loss"]
    assert first.metrics["best_valid_loss"] < 7.0  # log2(vocab) ~ 8+ for an untrained model
    mtime = (tmp_path / "checkpoint_last.pt").stat().st_mtime
    again = run_stage(cfg)
    assert again.metric == first.metric
    assert (tmp_path / "checkpoint_last.pt").stat().st_mtime == mtime


def test_gradient_accumulation_matches_one_big_batch(demo_root, tmp_path):
    """update_freq=2 over batches A, B gives the same update as one batch A+B."""
    cfg = compose_cfg(demo_root, *TRAIN, "model.dropout=0", f"paths.run_dir={tmp_path}")
    t1, t2 = make_trainer(cfg), make_trainer(cfg)
    t2.model.load_state_dict(t1.model.state_dict())
    batches = t1.train_sampler.batches_for_epoch(1)[:2]
    t1.train_step(batches)
    t2.train_step([batches[0] + batches[1]])
    for a, b in zip(t1.model.parameters(), t2.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_validate_bleu_each_epoch_is_logged(demo_root, tmp_path):
    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_epoch=1", "trainer.validate_bleu=true",
                      "generation.max_examples=10", "generation.beam=2", f"paths.run_dir={tmp_path}")
    logged = {}

    class Recorder:
        run_id = None

        def log_metrics(self, metrics, step=None):
            logged.update(metrics)

    trainer = make_trainer(cfg)
    trainer.tracker = Recorder()
    trainer.fit()
    assert 0.0 <= logged["valid_bleu"] <= 100.0


def test_epoch_checkpoints_keep_the_last_and_the_best(demo_root, tmp_path):
    from pet.training.checkpoints import best_checkpoints, epoch_checkpoints

    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_epoch=4", "trainer.keep_last_epochs=2",
                      "trainer.keep_best_checkpoints=2", f"paths.run_dir={tmp_path}")
    losses = []

    class Recorder:
        run_id = None

        def log_metrics(self, metrics, step=None):
            if "valid_loss" in metrics:
                losses.append(metrics["valid_loss"])

    trainer = make_trainer(cfg)
    trainer.tracker = Recorder()
    trainer.fit()
    assert [n for _, n in epoch_checkpoints(tmp_path)] == [3, 4]
    assert load_checkpoint(tmp_path / "checkpoint4.pt")["trainer"]["epoch"] == 5
    kept = [loss for _, loss in best_checkpoints(tmp_path)]
    assert kept == [round(v, 4) for v in sorted(losses)[:2]]


def fit_on_scripted_bleu(demo_root, tmp_path, scores, *overrides):
    """Train 6 epochs at most, patience 3 on validation BLEU, with ``scores`` as each epoch's BLEU."""
    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_epoch=6", "trainer.best_checkpoint_metric=bleu",
                      "trainer.patience=3", *overrides, f"paths.run_dir={tmp_path}")
    scripted = iter(scores)
    trainer = make_trainer(cfg)
    trainer.validate_bleu = lambda: next(scripted)
    return trainer.fit()


def test_best_checkpoint_by_validation_bleu(demo_root, tmp_path):
    """checkpoint_best.pt, checkpoint.best_bleu_*.pt and patience follow BLEU, not the loss."""
    from pet.training.checkpoints import best_checkpoints

    state = fit_on_scripted_bleu(demo_root, tmp_path, [3.0, 7.0, 5.0, 6.0, 6.5, 9.0], "trainer.keep_best_checkpoints=2")
    assert state.stop_reason == "patience" and state.epoch == 6  # epochs 3-5 did not beat epoch 2
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["trainer"]["epoch"] == 3  # saved after epoch 2
    assert [v for _, v in best_checkpoints(tmp_path, "bleu")] == [7.0, 6.5]
    assert state.best_valid_bleu == 7.0


def test_patience_min_delta_restarts_the_count_only_on_a_larger_gain(demo_root, tmp_path):
    """A curve that gains less than patience_min_delta in all over `patience` epochs
    has plateaued: patience runs out although every epoch was a new best, and
    checkpoint_best.pt still follows each of those small gains."""
    state = fit_on_scripted_bleu(demo_root, tmp_path, [3.0, 7.0, 7.3, 7.6, 7.9, 9.5], "trainer.patience_min_delta=1.0")
    assert state.stop_reason == "patience" and state.epoch == 6  # 0.3, 0.6, 0.9 gained on epoch 2's 7.0
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["trainer"]["epoch"] == 6  # saved after epoch 5
    assert state.best_valid_bleu == 7.9


def test_patience_min_delta_on_the_validation_loss():
    from pet.training.state import Budget, TrainState

    def bad_epochs(losses, min_delta):
        state, counts = TrainState(), []
        for loss in losses:
            improved = state.record_validation({"valid_loss": loss, "valid_nll_loss": loss}, True, False, min_delta)
            counts.append((improved, state.bad_epochs))
        return counts

    losses = [6.0, 5.5, 5.495, 5.49, 5.6, 5.47]
    assert bad_epochs(losses, 0.0) == [(True, 0), (True, 0), (True, 0), (True, 0), (False, 1), (True, 0)]
    # 5.495 and 5.49 are new bests but within 0.01 of 5.5, where the count last restarted;
    # 5.47 gains 0.03 on it
    assert bad_epochs(losses, 0.01) == [(True, 0), (True, 0), (True, 1), (True, 2), (False, 3), (True, 0)]
    # small gains add up: 0.004 per epoch restarts the count every third epoch, never stopping a
    # steady descent; a gain measured against the best so far instead would count 1, 2, 3, 4, 5, 6
    creeping = [6.0 - 0.004 * i for i in range(7)]
    assert [n for _, n in bad_epochs(creeping, 0.01)] == [0, 1, 2, 0, 1, 2, 0]
    assert Budget(patience=6, patience_min_delta=0.01).early_stopping() == (
        "early stopping after 6 epochs without a gain of more than 0.01")
    assert Budget(patience=6).early_stopping() == "early stopping after 6 epochs without improvement"


def test_an_overflowing_loss_scale_skips_steps_without_counting_them(demo_root, tmp_path):
    """fp16's GradScaler skips a step whose gradients overflowed: no update, as in
    fairseq (the counter, LR schedule and hooks do not advance), only the data does."""
    cfg = compose_cfg(demo_root, *TRAIN, "trainer.max_update=4", f"paths.run_dir={tmp_path}")

    class OverflowThrice(TrainHook):
        def __init__(self):
            self.backwards, self.updates = 0, []

        def after_backward(self, trainer):
            self.backwards += 1
            if self.backwards <= 3:
                next(trainer.model.parameters()).grad.view(-1)[0] = float("inf")

        def after_update(self, trainer):
            self.updates.append((trainer.state.num_updates, trainer.state.last_lr))

    hook = OverflowThrice()
    trainer = make_trainer(cfg, hooks=[hook])
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    reference = make_trainer(compose_cfg(demo_root, *TRAIN, "trainer.max_update=4", f"paths.run_dir={tmp_path}/ref"))
    trainer.fit()
    assert hook.backwards == 7 and [n for n, _ in hook.updates] == [1, 2, 3, 4]
    assert [lr for _, lr in hook.updates] == [reference.schedule(n) for n in range(4)]  # the schedule did not move
    assert trainer.scaler.get_scale() == 1024.0 / 8
    assert trainer.state.batch_index == 7 or trainer.state.epoch > 1  # the skipped steps' batches are used up
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
