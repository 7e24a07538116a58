"""The sweep report over a hand-written multirun folder and over an MLflow parent run."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pet.errors import ConfigError
from pet.sweep.collect import COMPLETED, FAILED, MISSING, Job, collect_from_sweep_dir
from pet.sweep.metrics import canonicalize
from pet.sweep.pareto import pareto_front
from pet.sweep.render import metric_columns
from pet.sweep.report import ReportOptions, make_report
from tests.conftest import compose_cfg

PNG = b"\x89PNG\r\n\x1a\n"
BASE = ["stage=prune", "data=demo", "init_from=/ckpt/base.pt"]


def write_job(sweep: Path, num: int, rate: str, result: dict | None = None, traceback: str | None = None,
              traceback_first: bool = False) -> Path:
    name = ",".join(o.replace("/", "_") for o in [f"pruning.compression_rate={rate}", *BASE[1:]])
    d = sweep / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*BASE, f"pruning.compression_rate={rate}"]))
    (d / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: cli\n    num: {num}\n")
    if traceback is not None and traceback_first:
        (d / "traceback.txt").write_text(traceback)
        old = time.time() - 100
        os.utime(d / "traceback.txt", (old, old))
    if result is not None:
        (d / "result.json").write_text(json.dumps(result))
    if traceback is not None and not traceback_first:
        (d / "traceback.txt").write_text(traceback)
    return d


def prune_result(bleu: float, params: int, ms: float, flops: float) -> dict:
    """What stage=prune writes (pet.pruning.report.compare keys)."""
    return {
        "stage": "prune", "metric_name": "bleu", "metric": bleu, "checkpoint": None, "run_id": None,
        "metrics": {
            "bleu_after": bleu, "bleu_before": 32.0, "params_after": params, "params_before": 2000,
            "flops_per_tgt_token_after": flops, "flops_per_tgt_token_before": 9e6,
            "ms_per_sentence_b1_after": ms, "ms_per_sentence_b1_before": 25.0,
            "achieved_rate": params / 2000, "shape": {"encoder": [1, 2]}, "mode": "x",
        },
    }


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweeps" / "prune"
    write_job(sweep, 0, "0.5", prune_result(30.0, 1000, 10.0, 4e6))
    write_job(sweep, 1, "0.3", prune_result(28.0, 600, 7.0, 2.5e6))
    write_job(sweep, 2, "0.7", prune_result(29.0, 1400, 12.0, 6e6))  # dominated by rate 0.5
    write_job(sweep, 3, "0.2", traceback="Traceback (most recent call last):\n  ...\nRuntimeError: out of memory\n")
    write_job(sweep, 4, "0.1")  # still running, or never started
    # failed once, then succeeded on a relaunch: the newer result wins
    write_job(sweep, 5, "0.9", prune_result(31.0, 2000, 20.0, 8e6), traceback="old failure\n", traceback_first=True)
    (sweep / ".submitit" / "12_0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    return sweep


def test_pareto_front_keeps_only_undominated_points_sorted_by_x():
    pts = [(1000, 30.0), (600, 28.0), (1400, 29.0), (2000, 31.0), (600, 27.0), (1000, 30.0)]
    assert pareto_front(pts) == [1, 0, 5, 3]  # equal points do not dominate each other
    # lower is better (a loss): (600, 27) is now the best at the smallest size
    assert pareto_front(pts, maximize=False) == [4]
    assert pareto_front([]) == []


def test_stage_names_are_normalised_and_alias_sources_left_out_of_default_columns():
    m = canonicalize({"bleu_after": 30.0, "params_after": 10, "ms_per_sentence_b64_after": 1.5,
                      "ms_per_sentence_b64_before": 3.0, "ms_per_sentence_b1": 9.0, "num_updates": 5})
    assert m["bleu"] == 30.0 and m["parameters"] == 10
    assert m["latency_ms_b64"] == 1.5 and m["latency_ms_b1"] == 9.0

    cols = metric_columns([Job("a", {}, COMPLETED, metrics=m)])
    assert cols[:4] == ["bleu", "parameters", "latency_ms_b1", "latency_ms_b64"]
    assert "bleu_after" not in cols and "ms_per_sentence_b64_after" not in cols
    assert "ms_per_sentence_b64_before" in cols and "num_updates" in cols


def test_report_from_a_sweep_dir_table_status_fronts_and_plots(fake_sweep):
    jobs = collect_from_sweep_dir(fake_sweep)
    assert [j.overrides["pruning.compression_rate"] for j in jobs] == ["0.5", "0.3", "0.7", "0.2", "0.1", "0.9"]
    assert [j.status for j in jobs] == [COMPLETED, COMPLETED, COMPLETED, FAILED, MISSING, COMPLETED]
    assert jobs[3].error == "RuntimeError: out of memory"

    rep = make_report(sweep_dir=fake_sweep, options=ReportOptions())
    out = fake_sweep / "report"
    assert rep.out_dir == str(out)
    # only the override that varies becomes a column; then BLEU, size, FLOPs, latency
    assert rep.columns[:6] == ["pruning.compression_rate", "bleu", "parameters", "flops_per_tgt_token",
                               "latency_ms_b1", "achieved_rate"]
    assert "status" in rep.columns and "pareto_params" in rep.columns and "pareto_latency" in rep.columns
    assert rep.y == "bleu" and rep.maximize
    rate = lambda names: sorted(n.split(",")[0].split("=")[1] for n in names)  # noqa: E731
    assert rate(rep.fronts["bleu_vs_params"]) == ["0.3", "0.5", "0.9"]
    assert rate(rep.fronts["bleu_vs_latency"]) == ["0.3", "0.5", "0.9"]

    for name in ("report.md", "report.csv", "bleu_vs_params.png", "bleu_vs_latency.png"):
        assert (out / name).is_file(), name
    for png in ("bleu_vs_params.png", "bleu_vs_latency.png"):
        assert (out / png).read_bytes()[:8] == PNG

    md = (out / "report.md").read_text()
    assert "| pruning.compression_rate | bleu | parameters |" in md
    assert "| 0.2 | - | - | - | - |" in md and "FAILED" in md and "RUNNING/MISSING" in md
    assert "RuntimeError: out of memory" in md

    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert len(rows) == 6
    by_rate = {r["pruning.compression_rate"]: r for r in rows}
    assert by_rate["0.5"]["bleu"] == "30.0" and by_rate["0.5"]["parameters"] == "1000"
    assert by_rate["0.5"]["pareto_params"] == "True" and by_rate["0.7"]["pareto_params"] == "False"
    assert by_rate["0.2"]["status"] == FAILED and by_rate["0.1"]["status"] == MISSING
    assert by_rate["0.9"]["status"] == COMPLETED


def test_report_columns_are_configurable_and_losses_minimised(fake_sweep):
    for d in fake_sweep.iterdir():
        if (d / "result.json").exists():
            r = json.loads((d / "result.json").read_text())
            r["metrics"] = {"best_valid_loss": 40 - r["metric"], "parameters": r["metrics"]["params_after"]}
            r["metric_name"], r["metric"] = "best_valid_loss", 40 - r["metric"]
            (d / "result.json").write_text(json.dumps(r))
    rep = make_report(sweep_dir=fake_sweep, options=ReportOptions(columns=["parameters", "best_valid_loss"],
                                                                  output_dir=str(fake_sweep / "r2")))
    assert rep.columns == ["pruning.compression_rate", "parameters", "best_valid_loss", "status", "pareto_params"]
    assert rep.y == "best_valid_loss" and not rep.maximize  # no BLEU: the main metric, a loss
    assert "bleu_vs_latency" not in rep.fronts and any("no job reports latency" in n for n in rep.notes)
    assert (fake_sweep / "r2" / "bleu_vs_params.png").is_file()


def test_not_a_sweep_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        collect_from_sweep_dir(tmp_path / "nope")
    (tmp_path / "a_job" / ".hydra").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds no sweep jobs"):
        collect_from_sweep_dir(tmp_path)


def test_stage_report_needs_a_source(tmp_path):
    from pet.stages import run_stage

    with pytest.raises(ConfigError, match="report.sweep_dir="):
        run_stage(compose_cfg(tmp_path, "stage=report"))


def test_stage_report_over_a_sweep_dir(tmp_path, fake_sweep, capsys):
    from pet.stages import run_stage

    res = run_stage(compose_cfg(tmp_path, "stage=report", f"report.sweep_dir={fake_sweep}"))
    assert res.metric_name == "best_bleu" and res.metric == 31.0
    assert res.metrics["jobs"] == 6 and res.metrics["completed"] == 4 and res.metrics["failed"] == 1
    assert "| pruning.compression_rate |" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "result.json").read_text())["metric"] == 31.0


def test_report_from_an_mlflow_parent_run(tmp_path):
    """Parent + children in a SQLite store: statuses, override tags, metrics; files logged to the parent."""
    import mlflow

    from pet.tracking import create_parent_run, make_tracker

    cfg = OmegaConf.create({"backend": "mlflow", "uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "study",
                            "artifact_location": str(tmp_path / "artifacts")})
    parent = create_parent_run(cfg, "sweep:x", tags={"sweep": "true"})
    specs = [("0.5", 30.0, 1000, 10.0, "FINISHED"), ("0.3", 28.0, 600, 7.0, "FINISHED"),
             ("0.7", 29.0, 1400, 12.0, "FINISHED"), ("0.2", None, None, None, "FAILED")]
    for i, (rate, bleu, params, ms, status) in enumerate(specs):
        t = make_tracker(cfg)
        t.start(run_name=f"job{i}", parent_run_id=parent,
                tags={"override.pruning.compression_rate": rate, "override.stage": "prune", "sweep.job_num": str(i)})
        if bleu is not None:
            t.log_metrics({"bleu_after": bleu, "params_after": params, "ms_per_sentence_b1_after": ms})
        t.end(status)
    # a run of the same experiment outside the sweep is not a child
    t = make_tracker(cfg)
    t.start(run_name="other")
    t.end("FINISHED")

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rep = make_report(parent_run_id=parent, tracking_uri=uri, options=ReportOptions(output_dir=str(tmp_path / "rep")))
    assert [j.overrides["pruning.compression_rate"] for j in rep.jobs] == ["0.5", "0.3", "0.7", "0.2"]
    assert [j.status for j in rep.jobs] == [COMPLETED, COMPLETED, COMPLETED, FAILED]
    assert rep.columns[:4] == ["pruning.compression_rate", "bleu", "parameters", "latency_ms_b1"]
    assert sorted(n for n in rep.fronts["bleu_vs_params"]) == ["job0", "job1"]
    assert sorted(n for n in rep.fronts["bleu_vs_latency"]) == ["job0", "job1"]
    for name in ("report.md", "report.csv", "bleu_vs_params.png", "bleu_vs_latency.png"):
        assert (tmp_path / "rep" / name).is_file()
    logged = {f.path for f in mlflow.MlflowClient(uri).list_artifacts(parent, "report")}
    assert logged == {"report/report.md", "report/report.csv", "report/bleu_vs_params.png", "report/bleu_vs_latency.png"}

    with pytest.raises(ConfigError, match="no child runs"):
        make_report(parent_run_id=rep.jobs[0].run_id, tracking_uri=uri, options=ReportOptions(output_dir=str(tmp_path)))


def with_ct2(result: dict, sent_per_s: float, mb: float) -> dict:
    """What stage=prune adds with its engine table (pet.export.speed.compare_engines keys)."""
    result["metrics"].update({
        "ct2_int8_sent_per_s_b1_after": sent_per_s, "ct2_int8_sent_per_s_b1_before": 50.0,
        "ct2_int8_mb_after": mb, "ct2_int8_mb_before": 2.0, "ct2_float32_sent_per_s_b1_after": sent_per_s / 2,
        "pet_sent_per_s_b1_after": 10.0, "ct2_int8_speedup_b1": sent_per_s / 50.0,
    })
    return result


def test_ct2_latency_and_size_are_costs_in_the_table_and_plots(tmp_path):
    sweep = tmp_path / "sweeps" / "prune"
    write_job(sweep, 0, "0.5", with_ct2(prune_result(30.0, 1000, 10.0, 4e6), 120.0, 1.0))
    write_job(sweep, 1, "0.3", with_ct2(prune_result(28.0, 600, 7.0, 2.5e6), 200.0, 0.6))
    write_job(sweep, 2, "0.7", with_ct2(prune_result(29.0, 1400, 12.0, 6e6), 250.0, 1.4))  # fastest, not smallest
    write_job(sweep, 3, "0.9", with_ct2(prune_result(31.0, 2000, 20.0, 8e6), 60.0, 2.0))
    rep = make_report(sweep_dir=sweep, options=ReportOptions())

    assert rep.columns[:8] == ["pruning.compression_rate", "bleu", "parameters", "flops_per_tgt_token",
                               "latency_ms_b1", "ct2_int8_latency_ms_b1", "ct2_float32_latency_ms_b1", "ct2_int8_mb"]
    assert "ct2_int8_sent_per_s_b1_after" not in rep.columns and "ct2_int8_sent_per_s_b1_before" in rep.columns
    job = {j.overrides["pruning.compression_rate"]: j for j in rep.jobs}["0.3"]
    assert job.metrics["ct2_int8_latency_ms_b1"] == pytest.approx(5.0) and job.metrics["ct2_int8_mb"] == 0.6

    rate = lambda names: [n.split(",")[0].split("=")[1] for n in names]  # noqa: E731
    assert rate(rep.fronts["bleu_vs_ct2_latency"]) == ["0.7", "0.5", "0.9"]  # by ms/sentence, smallest first
    assert rate(rep.fronts["bleu_vs_ct2_size"]) == ["0.3", "0.5", "0.9"]
    for png in ("bleu_vs_ct2_latency.png", "bleu_vs_ct2_size.png"):
        assert (sweep / "report" / png).read_bytes()[:8] == PNG
    rows = {r["pruning.compression_rate"]: r for r in csv.DictReader(io.StringIO(rep.csv_text))}
    assert rows["0.7"]["pareto_ct2_latency"] == "True" and rows["0.7"]["pareto_ct2_size"] == "False"
    assert "![bleu_vs_ct2_size](bleu_vs_ct2_size.png)" in rep.markdown


def test_exports_speed_becomes_latency_and_without_it_the_plots_say_how_to_get_it(fake_sweep):
    m = canonicalize({"ct2_int8_sent_per_s_b1": 200.0, "ct2_int8_sent_per_s_b64": 2000.0, "ct2_int8_mb": 3.0,
                      "pet_sent_per_s_b1": 50.0})
    assert m["ct2_int8_latency_ms_b1"] == pytest.approx(5.0) and m["ct2_int8_latency_ms_b64"] == pytest.approx(0.5)
    assert m["latency_ms_b1"] == pytest.approx(20.0) and m["ct2_int8_mb"] == 3.0

    rep = make_report(sweep_dir=fake_sweep, options=ReportOptions())
    assert "bleu_vs_ct2_latency" not in rep.fronts and "pareto_ct2_size" not in rep.columns
    note = next(n for n in rep.notes if n.startswith("bleu_vs_ct2_latency.png not drawn"))
    assert "report.measure=true" in note and 'pip install -e ".[serve]"' in note


def sweep_of_checkpoints(tmp_path) -> Path:
    """Two completed prune jobs with BLEU and a real checkpoint each, but no size or speed."""
    from pet.checkpoint import save_checkpoint
    from tests.conftest import small_model

    sweep = tmp_path / "sweeps" / "prune"
    for num, (rate, ffn) in enumerate((("0.5", 64), ("0.3", 16))):
        model = small_model(50, 50, dropout=0.0, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn)
        ckpt = tmp_path / f"model{num}.pt"
        save_checkpoint({"spec": model.spec.to_dict(), "model": model.state_dict(),
                         "src_dict": [f"w{i}" for i in range(50)], "tgt_dict": [f"w{i}" for i in range(50)]}, ckpt)
        write_job(sweep, num, rate, {"stage": "prune", "metric_name": "bleu", "metric": 30.0 - num,
                                     "checkpoint": str(ckpt), "run_id": None, "metrics": {"bleu_after": 30.0 - num}})
    return sweep


def test_measure_times_checkpoints_in_ctranslate2_too(tmp_path):
    pytest.importorskip("ctranslate2")
    sweep = sweep_of_checkpoints(tmp_path)
    rep = make_report(sweep_dir=sweep, options=ReportOptions(measure=True, latency_repeats=1, latency_length=6,
                                                             beam=2, threads=1))
    for j in rep.jobs:
        assert {"parameters", "latency_ms_b1", "ct2_int8_latency_ms_b1", "ct2_int8_mb"} <= set(j.measured)
        assert j.metrics["ct2_int8_latency_ms_b1"] > 0
    small, big = sorted(rep.jobs, key=lambda j: j.metrics["parameters"])
    assert small.metrics["ct2_int8_mb"] < big.metrics["ct2_int8_mb"]
    assert {"ct2_int8_latency_ms_b1", "ct2_int8_mb", "pareto_ct2_latency", "pareto_ct2_size"} <= set(rep.columns)
    assert (sweep / "report" / "bleu_vs_ct2_size.png").is_file()
    assert any("CTranslate2 int8 on the CPU" in n for n in rep.notes)


def test_measure_without_ctranslate2_times_pet_and_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError
    sweep = sweep_of_checkpoints(tmp_path)
    rep = make_report(sweep_dir=sweep, options=ReportOptions(measure=True, latency_repeats=1, latency_length=6,
                                                             beam=2, threads=1))
    assert all("latency_ms_b1" in j.metrics and "ct2_int8_mb" not in j.metrics for j in rep.jobs)
    assert any(n.startswith("2 checkpoint(s) not timed in CTranslate2") and "[serve]" in n for n in rep.notes)
