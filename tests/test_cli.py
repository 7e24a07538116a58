"""The `pet` console script, as a user runs it."""

import importlib.util
import os
import subprocess
import sys

from tests.conftest import REPO

PET = [sys.executable, "-m", "pet"]


def run_pet(*args: str, cwd=REPO, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PET_ROOT": str(REPO), **(env_extra or {})}
    return subprocess.run([*PET, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_summary_of_fairseqs_iwslt_model_prints_the_exact_parameter_count(tmp_path):
    r = run_pet("stage=summary", "model=transformer_iwslt_de_en", "data.src_vocab_size=8848",
                "data.tgt_vocab_size=6632", f"paths.output_root={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "39,469,056" in r.stdout


def test_cfg_job_prints_the_composed_config():
    r = run_pet("--cfg", "job", "model=transformer_small")
    assert r.returncode == 0, r.stderr
    assert "encoder_embed_dim: 256" in r.stdout


def test_a_bad_value_is_one_clear_error_line_and_exit_code_2(tmp_path):
    r = run_pet("stage=summary", "model.dropout=2", f"paths.output_root={tmp_path}")
    assert r.returncode == 2
    out = r.stdout + r.stderr
    assert "model.dropout=2.0 is out of range" in out
    assert "Traceback" not in out


def test_evaluate_without_a_checkpoint_says_what_to_pass(tmp_path):
    r = run_pet("stage=evaluate", "tracking=none", f"paths.output_root={tmp_path}")
    assert r.returncode == 2
    assert "init_from=" in r.stdout + r.stderr


def test_demo_pipeline_end_to_end_with_mlflow(tmp_path):
    """`pet` (the demo) shrunk to seconds: prepare -> pretrain -> evaluate -> prune x2 -> finetune -> evaluate
    -> export (int8, timed in CTranslate2; skipped without ctranslate2), tracked in SQLite."""
    r = run_pet(
        f"paths.output_root={tmp_path}",
        "data.demo_train_size=300", "data.demo_valid_size=30", "data.demo_test_size=30", "data.bpe_merges=150",
        "model.encoder_embed_dim=32", "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64",
        "model.decoder_ffn_dim=64", "trainer.max_epoch=2", "trainer.progress_bar=none",
        timeout=1800,  # ~4 min on idle cores; a shared, loaded machine takes several times longer
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "pipeline demo finished" in r.stdout
    assert (tmp_path / "mlflow.db").exists()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["demo"], output_format="list")
    stages = sorted(r.data.tags.get("stage") for r in runs)
    # prepare, pretrain, evaluate, prune x2, finetune, evaluate (pruned), export + the pipeline parent
    exported = importlib.util.find_spec("ctranslate2") is not None
    assert stages == sorted(["evaluate", "evaluate", "finetune", "pipeline", "prepare", "pretrain", "prune", "prune"]
                            + (["export"] if exported else []))
    parent = next(r for r in runs if r.data.tags.get("stage") == "pipeline")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 7 + exported
    if exported:  # the finetuned pruned model (the latest made), timed in CTranslate2 int8 and in pet
        export = next(r for r in runs if r.data.tags.get("stage") == "export")
        finetune = next(r for r in runs if r.data.tags.get("stage") == "finetune")
        assert export.data.tags["checkpoint"] == finetune.data.tags["checkpoint"]
        assert export.data.metrics["share_identical"] >= 0.99
        assert export.data.metrics["ct2_int8_sent_per_s_b1"] > 0 and export.data.metrics["pet_sent_per_s_b64"] > 0
        assert "CTranslate2 int8: " in r.stdout and " at batch 64 (pet eager: " in r.stdout
        # the second prune step's report timed the engines too (the first skips it to keep the demo short)
        prune_metrics = [p.data.metrics for p in runs if p.data.tags.get("stage") == "prune"]
        timed = [m for m in prune_metrics if "ct2_float32_mb_after" in m]
        assert len(prune_metrics) == 2 and len(timed) == 1 and timed[0]["ct2_int8_speedup_vs_ideal_b1"] > 0
        assert "CTranslate2 float32" in r.stdout
    else:
        assert 'stage=export skipped' in r.stdout + r.stderr and '[serve]' in r.stdout + r.stderr
    prune = [r for r in runs if r.data.tags.get("stage") == "prune"]
    assert all(r.info.status == "FINISHED" for r in prune)
    evaluate = next(r for r in runs if r.data.tags.get("stage") == "evaluate")
    assert "bleu" in evaluate.data.metrics and "nrefs:1" in evaluate.data.tags["sacrebleu_signature"]
    pretrain = next(r for r in runs if r.data.tags.get("stage") == "pretrain")
    assert "valid_loss" in pretrain.data.metrics and pretrain.data.params["model.encoder_embed_dim"] == "32"


def test_multirun_runs_every_combination(tmp_path):
    r = run_pet("--multirun", "stage=summary", "model=transformer_tiny,transformer_small",
                "data.src_vocab_size=100", "data.tgt_vocab_size=120", "tracking=none", f"paths.output_root={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "#0 : stage=summary model=transformer_tiny" in r.stdout + r.stderr
    assert "#1 : stage=summary model=transformer_small" in r.stdout + r.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweeps" / "summary").iterdir() if p.is_dir())
    assert [j for j in jobs if j.startswith("data.")] == [
        "data.src_vocab_size:100+data.tgt_vocab_size:120+model:transformer_small",
        "data.src_vocab_size:100+data.tgt_vocab_size:120+model:transformer_tiny",
    ]


def test_a_checkpoint_carries_its_data_and_its_folder_can_be_passed_back(tmp_path):
    """init_from=<checkpoint> alone evaluates on the corpus it was trained on;
    the printed run folder (and the stage's `latest` link) parse as init_from."""
    small = ["data.demo_train_size=300", "data.demo_valid_size=30", "data.demo_test_size=30", "data.bpe_merges=150"]
    r = run_pet("stage=pretrain", "model=transformer_tiny", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
                "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "trainer.max_epoch=1", *small,
                "tracking=none", f"paths.output_root={tmp_path}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folder = next(line.split(": ", 1)[1] for line in r.stdout.splitlines() if "run folder:" in line)
    assert "=" not in folder and "," not in folder
    latest = tmp_path / "runs" / "pretrain" / "latest"
    assert latest.resolve() == __import__("pathlib").Path(folder).resolve()
    for ckpt in (f"{folder}/checkpoint_best.pt", f"{latest}/checkpoint_best.pt"):
        # the default data config (a 6,000-pair demo) would not match the prepared 300-pair folder
        r = run_pet("stage=evaluate", f"init_from={ckpt}", "tracking=none", f"paths.output_root={tmp_path}")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "checkpoint:" in r.stdout
    r = run_pet("stage=evaluate", f"init_from={latest}/checkpoint_best.pt", "data=iwslt14_shared", "tracking=none",
                f"paths.output_root={tmp_path}")
    assert r.returncode == 2 and "drop the data settings" in r.stdout + r.stderr


def test_flops_say_what_they_count():
    from pet.pruning.report import format_report

    r = run_pet("stage=summary", "model=transformer_tiny", "data.src_vocab_size=100", "data.tgt_vocab_size=100",
                "tracking=none")
    assert "greedy decoding (beam 1)" in r.stdout
    rows = {"params_before": 10, "params_after": 5, "params_kept": 0.5, "flops_per_tgt_token_before": 4e6,
            "flops_per_tgt_token_after": 2e6, "flop_ideal_speedup": 2.0, "flops_beam": 5, "flops_length": 25,
            "ms_per_sentence_b64_before": 10.0, "ms_per_sentence_b64_after": 2.0, "measured_speedup_b64": 5.0,
            "speedup_vs_ideal_b64": 2.5}
    text = format_report("t", rows)
    assert "all 5 beam hypotheses, 25 -> 25 tokens" in text and "faster than FLOP-ideal" in text
    rows.update(ms_per_sentence_b64_after=6.0, measured_speedup_b64=10 / 6, speedup_vs_ideal_b64=10 / 12)
    assert "faster than FLOP-ideal" not in format_report("t", rows)
