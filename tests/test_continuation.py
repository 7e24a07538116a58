"""Stages that continue a trained model: their LR schedule, KD teacher, optimizer
hyper-parameters and per-rank seeds."""

from pathlib import Path

import pytest
import torch

import pet.runtime
from pet.checkpoint import load_checkpoint
from pet.errors import ConfigError
from pet.stages import run_stage
from pet.training.schedule import ConstantSchedule, InverseSqrtSchedule, continuation_schedule, final_lr
from pet.training.trainer import Trainer
from tests.conftest import PRUNE, TINY, compose_cfg
from tests.test_trainer import TRAIN, make_trainer


def test_continuation_schedule_warms_up_to_the_input_models_final_rate(pretrained):
    ckpt = load_checkpoint(pretrained)
    last = InverseSqrtSchedule(2e-3, 10, 1e-7)(ckpt["trainer"]["num_updates"] - 1)  # TINY's schedule
    assert final_lr(ckpt) == pytest.approx(last)
    del ckpt["trainer"]["last_lr"]  # a checkpoint that predates the record: recomputed from its config
    assert final_lr(ckpt) == pytest.approx(last)
    cfg = compose_cfg(Path("/tmp"), *TINY, "stage=finetune", "optim.continue_warmup_updates=4")
    sched = continuation_schedule(cfg.optim, ckpt)
    assert isinstance(sched, ConstantSchedule)
    assert sched(4) == sched(400) == pytest.approx(final_lr(ckpt))
    assert sched(0) < sched(2) < sched(4)
    fixed = compose_cfg(Path("/tmp"), *TINY, "stage=finetune", "optim.continue_lr=3e-4")
    assert continuation_schedule(fixed.optim, ckpt)(1000) == pytest.approx(3e-4)
    old = compose_cfg(Path("/tmp"), *TINY, "stage=finetune", "optim.continue_scheduler=pretrain")
    assert continuation_schedule(old.optim, ckpt)(0) == pytest.approx(old.optim.warmup_init_lr)


def test_finetune_and_prune_train_at_the_input_models_rate(demo_root, pretrained, tmp_path):
    """Not pretraining's warm-up from 1e-7 again: a short period reaches a useful rate."""
    rate = final_lr(load_checkpoint(pretrained))
    ft = run_stage(compose_cfg(demo_root, *TINY, "stage=finetune", "trainer.max_update=6",
                               "optim.continue_warmup_updates=3", f"init_from={pretrained}", f"paths.run_dir={tmp_path}/ft"))
    assert load_checkpoint(tmp_path / "ft" / "checkpoint_last.pt")["trainer"]["last_lr"] == pytest.approx(rate)
    assert ft.metrics["num_updates"] == 6
    pr = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.period_updates=6", "optim.continue_warmup_updates=3",
                               f"init_from={pretrained}", f"paths.run_dir={tmp_path}/pr"))
    assert load_checkpoint(pr.checkpoint)["last_lr"] == pytest.approx(rate)


def test_later_pruning_steps_distil_from_the_unpruned_origin(demo_root, pretrained, tmp_path, monkeypatch):
    import pet.stages.prune_steps as prune_stage

    teachers = []
    original = prune_stage.kd_teacher

    def record(cfg, base, history, data):
        model = original(cfg, base, history, data)
        teachers.append(model.num_parameters())
        return model

    monkeypatch.setattr(prune_stage, "kd_teacher", record)
    common = [*TINY, *PRUNE, "pruning.compression_rate=0.5", "pruning.period_updates=2", "pruning.bleu_sentences=2"]
    s1 = run_stage(compose_cfg(demo_root, *common, "pruning=two_stage_1", f"init_from={pretrained}",
                               f"paths.run_dir={tmp_path}/s1"))
    run_stage(compose_cfg(demo_root, *common, "pruning=two_stage_2", f"init_from={s1.checkpoint}",
                          f"paths.run_dir={tmp_path}/s2"))
    run_stage(compose_cfg(demo_root, *common, "pruning=two_stage_2", "pruning.kd_teacher=previous",
                          f"init_from={s1.checkpoint}", f"paths.run_dir={tmp_path}/s2prev"))
    origin = load_checkpoint(pretrained)
    n_origin = sum(v.numel() for v in origin["model"].values())
    n_stage1 = s1.metrics["params_after"]
    assert teachers == [n_origin, n_origin, n_stage1]


def test_continued_optimizer_takes_this_stages_hyper_parameters(demo_root, tmp_path):
    """distill.continue_schedule keeps the moments and update count, not the other run's betas/eps/decay."""
    first = make_trainer(compose_cfg(demo_root, *TRAIN, "model.dropout=0", f"paths.run_dir={tmp_path}/a"))
    for batch in first.train_sampler.batches_for_epoch(1)[:2]:
        first.train_step([batch])
    ckpt = {"spec": first.model.spec.to_dict(), "model": first.model.state_dict(), **first.state_dict()}
    second = make_trainer(compose_cfg(demo_root, *TRAIN, "model.dropout=0", "optim.betas=[0.8,0.9]", "optim.eps=1e-6",
                                      "optim.weight_decay=0.01", f"paths.run_dir={tmp_path}/b"))
    second.model.load_state_dict(first.model.state_dict())
    second.continue_schedule_from(ckpt, "first")
    group = second.optimizer.param_groups[0]
    assert tuple(group["betas"]) == (0.8, 0.9) and group["eps"] == 1e-6 and group["weight_decay"] == 0.01
    assert second.state.num_updates == 2
    p = group["params"][0]
    torch.testing.assert_close(second.optimizer.state[p]["exp_avg"], first.optimizer.state[first.optimizer.param_groups[0]["params"][0]]["exp_avg"])


def test_continued_schedule_already_at_the_budget_is_refused_before_training(demo_root, tmp_path):
    """A continued update count that meets trainer.max_update would end the stage with no model to hand on."""
    first = make_trainer(compose_cfg(demo_root, *TRAIN, f"paths.run_dir={tmp_path}/a"))
    for batch in first.train_sampler.batches_for_epoch(1)[:2]:
        first.train_step([batch])
    ckpt = {"spec": first.model.spec.to_dict(), "model": first.model.state_dict(), **first.state_dict()}
    at_budget = make_trainer(compose_cfg(demo_root, *TRAIN, "trainer.max_update=2", f"paths.run_dir={tmp_path}/b"))
    with pytest.raises(ConfigError, match=r"warm-up.pt ends at update 2 .* trainer.max_update=2 leaves nothing to train"):
        at_budget.continue_schedule_from(ckpt, "warm-up.pt")
    above = make_trainer(compose_cfg(demo_root, *TRAIN, "trainer.max_update=3", f"paths.run_dir={tmp_path}/c"))
    above.continue_schedule_from(ckpt, "warm-up.pt")
    assert above.fit().num_updates == 3


class Captured(Exception):
    pass


@pytest.mark.parametrize("stage", ["pretrain", "prune", "distill"])
def test_every_rank_trains_with_its_own_seed(demo_root, pretrained, tmp_path, monkeypatch, stage):
    overrides = {
        "pretrain": ["stage=pretrain"],
        "prune": [*PRUNE, f"init_from={pretrained}"],
        "distill": ["stage=distill", "distill=kd", "distill.beta=0", f"distill.teacher={pretrained}",
                    "distill.from_scratch=true"],
    }[stage]
    seen = {}

    def capture(self):
        seen[rank] = torch.initial_seed()
        raise Captured

    monkeypatch.setattr(Trainer, "fit", capture)
    for rank in (0, 1):
        monkeypatch.setattr(pet.runtime, "process_rank", lambda rank=rank: rank)
        cfg = compose_cfg(demo_root, *TINY, *overrides, "trainer.seed=7", f"paths.run_dir={tmp_path}/r{rank}")
        with pytest.raises(Captured):
            run_stage(cfg)
    assert seen == {0: 7, 1: 8}


def test_all_iterations_from_one_command(demo_root, pretrained, tmp_path):
    cfg = compose_cfg(demo_root, *TINY, *PRUNE, "pruning.pruning_iter=2", "pruning.period_updates=2",
                      "pruning.bleu_sentences=2", f"init_from={pretrained}", f"paths.run_dir={tmp_path}")
    assert cfg.pruning.iteration == 0  # the default: every iteration
    result = run_stage(cfg)
    ckpt = load_checkpoint(result.checkpoint)
    assert Path(result.checkpoint).parent == tmp_path / "iter2"
    assert [h["iteration"] for h in ckpt["pruning_history"]] == [1, 2]
    assert len(result.metrics["iteration_achieved_rates"]) == 2
    assert abs(result.metrics["achieved_rate"] - 0.5) < 0.01
    assert (tmp_path / "result.json").exists() and run_stage(cfg).checkpoint == result.checkpoint


def test_warm_up_epochs_train_before_pruning_starts(demo_root, pretrained, tmp_path):
    result = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.warmup_epochs=1", "pruning.period_updates=2",
                                   "pruning.bleu_sentences=2", f"init_from={pretrained}", f"paths.run_dir={tmp_path}"))
    warm = load_checkpoint(tmp_path / "warmup" / "checkpoint_last.pt")
    assert warm["trainer"]["finished"] and warm["trainer"]["epoch"] == 2
    assert not torch.equal(warm["model"]["encoder.embed.embed_tokens.weight"],
                           load_checkpoint(pretrained)["model"]["encoder.embed.embed_tokens.weight"])
    entry = load_checkpoint(result.checkpoint)["pruning_history"][0]
    assert entry["origin_checkpoint"] == str((tmp_path / "warmup" / "checkpoint_last.pt").resolve())


def test_finetune_can_distil_from_the_unpruned_origin(demo_root, pretrained, tmp_path):
    from pet.distill.losses import DistillationLoss
    from pet.errors import ConfigError
    from pet.stages.common import load_data
    from pet.stages.finetune import finetune_kd_loss

    pruned = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.period_updates=2", "pruning.bleu_sentences=2",
                                   f"init_from={pretrained}", f"paths.run_dir={tmp_path}/pr"))
    cfg = compose_cfg(demo_root, *TINY, "stage=finetune", "pruning.finetune_kd=true", "trainer.max_update=2",
                      f"init_from={pruned.checkpoint}", f"paths.run_dir={tmp_path}/ft")
    data = load_data(cfg)
    loss = finetune_kd_loss(cfg, load_checkpoint(pruned.checkpoint), data, torch.device("cpu"))
    assert isinstance(loss, DistillationLoss)
    assert loss.teacher.num_parameters() == sum(v.numel() for v in load_checkpoint(pretrained)["model"].values())
    assert run_stage(cfg).metrics["num_updates"] == 2
    plain = compose_cfg(demo_root, *TINY, "stage=finetune", "pruning.finetune_kd=true", f"init_from={pretrained}")
    with pytest.raises(ConfigError, match="no pruning history"):
        finetune_kd_loss(plain, load_checkpoint(pretrained), data, torch.device("cpu"))


def test_dense_baseline_of_a_pruned_shape(demo_root, pretrained, tmp_path):
    """model.shape_from builds a pruned checkpoint's exact layer shapes, freshly initialised."""
    pruned = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.period_updates=2", "pruning.bleu_sentences=2",
                                   f"init_from={pretrained}", f"paths.run_dir={tmp_path}/pr"))
    small = load_checkpoint(pruned.checkpoint)
    dense = run_stage(compose_cfg(demo_root, *TINY, "stage=pretrain", "trainer.max_update=2",
                                  f"model.shape_from={pruned.checkpoint}", f"paths.run_dir={tmp_path}/dense"))
    ckpt = load_checkpoint(dense.checkpoint)
    assert {k: v.shape for k, v in ckpt["model"].items()} == {k: v.shape for k, v in small["model"].items()}
    enc = ckpt["spec"]["encoder"]
    assert enc["embed_scale_dim"] == enc["embed_dim"] < small["spec"]["encoder"]["embed_scale_dim"]
    key = "encoder.layers.0.ffn.fc1.weight"
    assert not torch.equal(ckpt["model"][key], small["model"][key])
