"""stage=distill on real (demo) data: warm-up labels on a real batch, warm-up -> KD, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pet.checkpoint import load_checkpoint, save_checkpoint
from pet.distill.losses import WarmupLoss, warmup_labels
from pet.errors import CheckpointError, ConfigError
from pet.stages import run_stage
from pet.stages.common import load_data, resolve_step_reference
from pet.training.criterion import LabelSmoothedCrossEntropy
from tests.conftest import DEMO_DATA, compose_cfg, small_model

FAST = ["trainer.max_tokens=600", "optim.warmup_updates=10", "optim.lr=2e-3", "trainer.log_interval=1",
        "generation.max_examples=5", "trainer.num_threads=1"]
TINY_BASELINE = ["model=transformer_tiny", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
                 "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64"]


def test_warmup_labels_cover_all_four_classes_on_a_real_batch(demo_root):
    """A small teacher trained briefly on real demo data, labelling held-out sentences."""
    data = load_data(compose_cfg(demo_root, *DEMO_DATA, "stage=pretrain"))
    train = data.split("train")
    batches = [train.collate(list(range(i, i + 50))) for i in range(0, 400, 50)]
    held_out = data.split("valid").collate(list(range(40)))
    torch.manual_seed(0)
    teacher = small_model(len(data.src_dict), len(data.tgt_dict), seed=0, dropout=0.0)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    ce = LabelSmoothedCrossEntropy(0.0, 1)
    mask = held_out.target.ne(1)
    counts = [0, 0, 0, 0]
    for step in range(160):
        b = batches[step % len(batches)]
        loss, _ = ce(teacher, b)
        opt.zero_grad()
        (loss / b.ntokens).backward()
        opt.step()
        if step % 4 == 3:
            with torch.no_grad():
                logits, _, _ = teacher.eval()(held_out.src_tokens, held_out.prev_output_tokens)
            teacher.train()
            counts = torch.bincount(warmup_labels(logits[mask], held_out.target[mask]), minlength=4).tolist()
            if min(counts) > 0:
                break
    assert min(counts) > 0, counts
    assert sum(counts) == held_out.ntokens

    # ... and a student learns them: the warm-up loss falls, gradients flow.
    student = small_model(len(data.src_dict), len(data.tgt_dict), seed=1, dropout=0.0,
                          encoder_layer_order=[0, 1, 0, 1], decoder_layer_order=[0, 1, 0, 1],
                          encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"], decoder_share_query=True)
    loss_fn = WarmupLoss(teacher, 1)
    s_opt = torch.optim.Adam(student.parameters(), lr=5e-3)
    losses = []
    for _ in range(8):
        loss, logs = loss_fn(student, held_out)
        s_opt.zero_grad()
        loss.backward()
        s_opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert not teacher.training


@pytest.fixture(scope="module")
def teachers(demo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("pet_teachers")
    base = run_stage(compose_cfg(demo_root, *DEMO_DATA, *FAST, "stage=pretrain", *TINY_BASELINE,
                                 "trainer.max_update=2", f"paths.run_dir={root}/teacher"))
    tiny = run_stage(compose_cfg(demo_root, *DEMO_DATA, *FAST, "stage=pretrain", "model=pet_tiny_teacher_demo",
                                 "trainer.max_update=2", f"paths.run_dir={root}/tiny_teacher"))
    return root, base.checkpoint, tiny.checkpoint


def test_warmup_then_kd_stages_run_resume_and_hand_on_checkpoints(demo_root, teachers, tmp_path):
    _, baseline, tiny = teachers
    warm_cfg = compose_cfg(demo_root, *DEMO_DATA, *FAST, "stage=distill", "distill=warmup", "model=pet_student_demo",
                           f"distill.teacher={baseline}", "trainer.max_update=3", f"paths.run_dir={tmp_path}/warmup")
    warm = run_stage(warm_cfg)
    assert warm.checkpoint == str(tmp_path / "warmup" / "checkpoint_last.pt")
    assert warm.metrics["num_updates"] == 3 and warm.metrics["mode"] == "warmup"
    ckpt = load_checkpoint(warm.checkpoint)
    assert ckpt["spec"]["encoder"]["layer_order"] == [0, 1, 0, 1]
    assert ckpt["spec"]["encoder"]["attention_roles"] == ["qkv", "qkv", "kvq", "kvq"]
    assert ckpt["spec"]["decoder"]["share_query"] is True
    assert ckpt["distill"] == {"mode": "warmup", "teacher": baseline}
    # the trainer's AdamW holds each shared tensor once: its moments add up to
    # the deduplicated parameter count
    moments = sum(s["exp_avg"].numel() for s in ckpt["optimizer"]["state"].values())
    assert moments == warm.metrics["parameters"]
    assert json.loads((tmp_path / "warmup" / "result.json").read_text())["stage"] == "distill"
    # re-running the same command is a no-op
    mtime = Path(warm.checkpoint).stat().st_mtime_ns
    again = run_stage(warm_cfg)
    assert again.metrics["num_updates"] == 3 and Path(warm.checkpoint).stat().st_mtime_ns == mtime

    # KD continues the warm-up's optimizer and LR schedule: max_update counts
    # the warm-up's 3 updates, and Adam's step counters go on from 3.
    kd = run_stage(compose_cfg(demo_root, *DEMO_DATA, *FAST, "stage=distill", "distill=kd", "model=pet_student_demo",
                               f"init_from={warm.checkpoint}", f"distill.teacher={tiny}", "trainer.max_update=6",
                               f"paths.run_dir={tmp_path}/kd"))
    assert kd.checkpoint == str(tmp_path / "kd" / "checkpoint_best.pt")
    assert kd.metrics["num_updates"] == 6
    kd_last = load_checkpoint(tmp_path / "kd" / "checkpoint_last.pt")
    assert {int(s["step"]) for s in kd_last["optimizer"]["state"].values()} == {6}
    # ... or, with continue_schedule=false, a fresh optimizer and schedule
    fresh = run_stage(compose_cfg(demo_root, *DEMO_DATA, *FAST, "stage=distill", "distill=kd", "model=pet_student_demo",
                                  f"init_from={warm.checkpoint}", f"distill.teacher={tiny}", "trainer.max_update=3",
                                  "distill.continue_schedule=false", f"paths.run_dir={tmp_path}/kd_fresh"))
    fresh_last = load_checkpoint(tmp_path / "kd_fresh" / "checkpoint_last.pt")
    assert fresh.metrics["num_updates"] == 3
    assert {int(s["step"]) for s in fresh_last["optimizer"]["state"].values()} == {3}
    assert kd.metrics["parameters"] == warm.metrics["parameters"]
    assert kd.metrics["teacher_parameters"] > kd.metrics["parameters"]
    # the KD student started from the warm-up weights, not from scratch: after
    # 3 small updates it is still close to them
    w = load_checkpoint(warm.checkpoint)["model"]
    k = load_checkpoint(tmp_path / "kd" / "checkpoint_last.pt")["model"]
    name = "encoder.layers.0.ffn.fc1.weight"
    assert (w[name] - k[name]).abs().max() < 0.05


def test_stage_errors_name_the_problem(demo_root, teachers, tmp_path):
    _, baseline, tiny = teachers
    common = [*DEMO_DATA, *FAST, "stage=distill", "model=pet_student_demo", "trainer.max_update=1"]
    with pytest.raises(ConfigError, match="needs a teacher"):
        run_stage(compose_cfg(demo_root, *common, "distill=warmup", f"paths.run_dir={tmp_path}/a"))
    with pytest.raises(CheckpointError, match="teacher checkpoint .* does not exist"):
        run_stage(compose_cfg(demo_root, *common, "distill=kd", f"distill.teacher={tmp_path}/nope.pt",
                              f"paths.run_dir={tmp_path}/b"))
    state = load_checkpoint(tiny)
    state["tgt_dict"] = state["tgt_dict"][:-1] + ["someotherword"]
    other = tmp_path / "other_vocab.pt"
    save_checkpoint({k: v for k, v in state.items() if k != "format_version"}, other)
    with pytest.raises(CheckpointError, match="other dictionaries"):
        run_stage(compose_cfg(demo_root, *common, "distill=kd", f"distill.teacher={other}", f"paths.run_dir={tmp_path}/c"))
    # continuing the schedule of a checkpoint that has no optimizer state
    bare = tmp_path / "weights_only.pt"
    save_checkpoint({k: v for k, v in load_checkpoint(tiny).items() if k not in ("format_version", "optimizer")}, bare)
    with pytest.raises(CheckpointError, match="no optimizer state to continue"):
        run_stage(compose_cfg(demo_root, *common, "distill=kd", f"init_from={bare}", f"distill.teacher={tiny}",
                              f"paths.run_dir={tmp_path}/e"))
    # distill=none: the student with plain CE, no teacher needed (the from-scratch baseline)
    plain = run_stage(compose_cfg(demo_root, *common, "distill.mode=none", f"paths.run_dir={tmp_path}/n"))
    assert plain.metrics["teacher"] is None and plain.metrics["num_updates"] == 1
    # hidden states of a teacher of other widths cannot be matched
    with pytest.raises(ConfigError, match="wide"):
        run_stage(compose_cfg(demo_root, *common, "distill=kd", f"distill.teacher={baseline}", f"paths.run_dir={tmp_path}/d"))


def test_teacher_at_step_resolves_to_the_sibling_pipeline_step(tmp_path):
    step = tmp_path / "pipe" / "tiny_teacher"
    step.mkdir(parents=True)
    (step / "result.json").write_text(json.dumps({"stage": "pretrain", "metric_name": "x", "metric": 1.0,
                                                  "checkpoint": "/somewhere/checkpoint_best.pt"}))
    assert resolve_step_reference("@tiny_teacher", tmp_path / "pipe" / "kd", "distill.teacher") == "/somewhere/checkpoint_best.pt"
    assert resolve_step_reference("/a/b.pt", tmp_path, "distill.teacher") == "/a/b.pt"
    with pytest.raises(ConfigError, match="no finished pipeline step"):
        resolve_step_reference("@missing", tmp_path / "pipe" / "kd", "distill.teacher")


@pytest.mark.parametrize("experiment", ["pet_demo", "pet_iwslt"])
def test_pet_experiments_compose_and_every_step_validates(tmp_path, experiment):
    from pet.config.validate import validate

    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    validate(cfg)
    steps = {s.name: list(s.overrides) for s in cfg.stage.steps}
    assert list(steps)[1:5] == ["teacher", "tiny_teacher", "warmup", "kd"]
    assert "distill.teacher=@teacher" in steps["warmup"] and "distill.from_scratch=true" in steps["warmup"]
    assert "init_from=@warmup" in steps["kd"] and "distill.teacher=@tiny_teacher" in steps["kd"]
    for _name, overrides in steps.items():
        # what the pipeline composes for the step (it resolves init_from itself)
        step = [("stage.name=" + o[6:]) if o.startswith("stage=") else o for o in overrides if not o.startswith("init_from=")]
        validate(compose_cfg(tmp_path, f"experiment={experiment}", *step))
