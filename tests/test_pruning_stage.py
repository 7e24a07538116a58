"""stage=prune end to end on the demo corpus: two-stage chain, no-op re-run, resume, summary."""

import json

import pytest
import torch

from pet.checkpoint import load_checkpoint, model_from_checkpoint
from pet.stages import run_stage
from tests.conftest import PRUNE, TINY, compose_cfg


def shape(spec):
    return {
        "emb": (spec.encoder.embed_dim, spec.decoder.embed_dim),
        "heads_ffn": [(l.self_attn.qk_dim, l.self_attn.vo_dim, l.ffn_dim,
                       (l.cross_attn.qk_dim, l.cross_attn.vo_dim) if l.cross_attn else None)
                      for l in spec.encoder.layers + spec.decoder.layers],
    }


def test_two_stage_prunes_only_what_each_stage_owns(demo_root, pretrained, tmp_path):
    base = model_from_checkpoint(load_checkpoint(pretrained))
    common = [*TINY, *PRUNE, "pruning.compression_rate=0.5"]
    r1 = run_stage(compose_cfg(demo_root, *common, "pruning=two_stage_1", "shrink=arithmetic", "shrink.unit=epoch",
                               f"init_from={pretrained}", f"paths.run_dir={tmp_path}/s1"))
    s1 = model_from_checkpoint(load_checkpoint(r1.checkpoint))
    assert shape(s1.spec)["emb"] < shape(base.spec)["emb"]
    assert shape(s1.spec)["heads_ffn"] == shape(base.spec)["heads_ffn"]
    assert abs(r1.metrics["achieved_rate"] / r1.metrics["requested_rate"] - 1) < 0.01

    # Stage 2 scores by |dL/dc| (stage 1 used the default -dL/dc): both criteria run through the stage.
    common_2 = [*common, "pruning=two_stage_2", "shrink=geometric", "pruning.importance=gradient_magnitude"]
    r2 = run_stage(compose_cfg(demo_root, *common_2, f"init_from={r1.checkpoint}", f"paths.run_dir={tmp_path}/s2"))
    ckpt = load_checkpoint(r2.checkpoint)
    s2 = model_from_checkpoint(ckpt)
    assert shape(s2.spec)["emb"] == shape(s1.spec)["emb"]
    assert shape(s2.spec)["heads_ffn"] != shape(s1.spec)["heads_ffn"]
    assert abs(s2.num_parameters() / (0.5 * base.num_parameters()) - 1) < 0.01
    assert [h["targets"] for h in ckpt["pruning_history"]] == ["emb", "heads_ffn"]
    report = json.loads((tmp_path / "s2" / "prune_report.json").read_text())
    for key in ("requested_rate", "achieved_rate", "params_before", "params_after", "flops_per_tgt_token_after",
                "flop_ideal_speedup", "bleu_before", "bleu_after"):
        assert key in report
    assert report["removal_max_logprob_diff"] < 1e-5

    # The report a finetune run of the pruned model prints (vs the unpruned origin).
    from pet.pruning.report import finetune_report
    from pet.stages.common import load_data

    cfg = compose_cfg(demo_root, *common, "pruning.bleu_sentences=4")
    rows = finetune_report(cfg, load_data(cfg), ckpt, s2, torch.device("cpu"))
    assert rows["params_before"] == base.num_parameters() and rows["params_after"] == s2.num_parameters()
    assert rows["flop_ideal_speedup"] > 1.5 and "bleu_before" in rows and "bleu_after" in rows

    # A finished prune is a no-op.
    mtime = (tmp_path / "s2" / "checkpoint_pruned.pt").stat().st_mtime
    again = run_stage(compose_cfg(demo_root, *common_2, f"init_from={r1.checkpoint}", f"paths.run_dir={tmp_path}/s2"))
    assert again.checkpoint == r2.checkpoint
    assert (tmp_path / "s2" / "checkpoint_pruned.pt").stat().st_mtime == mtime

    # The pruned checkpoint is all stage=summary needs.
    summary = run_stage(compose_cfg(demo_root, "stage=summary", f"init_from={r2.checkpoint}"))
    assert summary.metric == s2.num_parameters()


def test_interrupted_prune_resumes_to_the_same_model(demo_root, pretrained, tmp_path, monkeypatch):
    from pet.pruning.shrink import ShrinkHook

    common = [*TINY, *PRUNE, "pruning=single_stage", "pruning.compression_rate=0.6", "pruning.report_bleu=false",
              "trainer.save_interval_updates=2", f"init_from={pretrained}"]
    ref = run_stage(compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/ref"))

    original = ShrinkHook.after_update

    def crash(self, trainer):
        original(self, trainer)
        if trainer.state.num_updates == 3:
            raise KeyboardInterrupt("simulated preemption")

    monkeypatch.setattr(ShrinkHook, "after_update", crash)
    with pytest.raises(KeyboardInterrupt):
        run_stage(compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/cut"))
    monkeypatch.setattr(ShrinkHook, "after_update", original)
    assert (tmp_path / "cut" / "checkpoint_last.pt").exists() and not (tmp_path / "cut" / "checkpoint_pruned.pt").exists()
    resumed = run_stage(compose_cfg(demo_root, *common, f"paths.run_dir={tmp_path}/cut"))
    a = load_checkpoint(ref.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_period_in_updates_shrinks_to_zero_within_that_many_updates(demo_root, pretrained, tmp_path):
    r = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning=single_stage", "pruning.compression_rate=0.6",
                              "pruning.period_updates=3", "shrink=geometric", "pruning.report_bleu=false",
                              f"init_from={pretrained}", f"paths.run_dir={tmp_path}/u"))
    last = load_checkpoint(tmp_path / "u" / "checkpoint_last.pt")
    assert last["trainer"]["num_updates"] == 3  # not the epoch of pruning.pruning_period=1
    entry = load_checkpoint(r.checkpoint)["pruning_history"][-1]
    assert entry["period_updates"] == 3 and entry["period_complete"] is True
    assert abs(r.metrics["achieved_rate"] / r.metrics["requested_rate"] - 1) < 0.01


def test_period_in_updates_needs_step_unit(demo_root, pretrained, tmp_path):
    from pet.config.validate import validate
    from pet.errors import ConfigError

    with pytest.raises(ConfigError, match="shrink.unit=step"):
        validate(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.period_updates=3", "shrink=arithmetic",
                             "shrink.unit=epoch", f"init_from={pretrained}", f"paths.run_dir={tmp_path}/e"))
