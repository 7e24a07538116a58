"""The prune report's engine table: pet's eager loop and CTranslate2 float32/int8, before vs after."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from omegaconf import OmegaConf

from pet.config.validate import validate
from pet.errors import ConfigError
from pet.export.ctranslate2 import ExportError
from pet.pruning.report import engines_enabled, format_report, report_rows
from tests.conftest import PRUNE, TINY, compose_cfg, small_model

ENGINE_ROWS = ("pet eager", "CTranslate2 float32", "CTranslate2 int8")


def report_cfg(**pruning):
    p = {"latency_length": 6, "latency_batch_sizes": [1, 4], "latency_repeats": 1, "latency_threads": 1,
         "report_latency": True, "report_engines": None, **pruning}
    return OmegaConf.create({"generation": {"beam": 2}, "pruning": p})


def without_ctranslate2(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError


def test_engines_default_to_on_where_ctranslate2_is_installed(monkeypatch, caplog):
    pytest.importorskip("ctranslate2")
    assert engines_enabled(report_cfg())
    assert not engines_enabled(report_cfg(report_engines=False))
    assert not engines_enabled(report_cfg(report_latency=False))

    without_ctranslate2(monkeypatch)
    with caplog.at_level(logging.INFO, logger="pet.pruning.report"):
        assert not engines_enabled(report_cfg())
    assert 'pip install -e ".[serve]"' in caplog.text
    with pytest.raises(ExportError, match="serve"):
        engines_enabled(report_cfg(report_engines=True))


def test_engines_need_latency_timing(tmp_path):
    with pytest.raises(ConfigError, match="pruning.report_engines"):
        validate(compose_cfg(tmp_path, "stage=prune", "pruning.report_engines=true", "pruning.report_latency=false"))
    with pytest.raises(ConfigError, match="pruning.latency_batch_sizes"):
        validate(compose_cfg(tmp_path, "stage=prune", "pruning.latency_batch_sizes=[0]"))


def test_report_rows_time_every_engine_before_and_after():
    pytest.importorskip("ctranslate2")
    before = small_model(60, 60, dropout=0.0)
    after = small_model(60, 60, dropout=0.0, encoder_ffn_dim=16, decoder_ffn_dim=16)
    rows = report_rows(report_cfg(), before, after, engines=True)
    for engine in ("pet", "ct2_float32", "ct2_int8"):
        for bs in (1, 4):
            b, a = rows[f"{engine}_sent_per_s_b{bs}_before"], rows[f"{engine}_sent_per_s_b{bs}_after"]
            assert b > 0 and a > 0
            assert rows[f"{engine}_speedup_b{bs}"] == pytest.approx(a / b)
            assert rows[f"{engine}_speedup_vs_ideal_b{bs}"] == pytest.approx(a / b / rows["flop_ideal_speedup"])
    # pet's ms/sentence come from the same rounds as its engine row
    assert rows["ms_per_sentence_b4_after"] == pytest.approx(1000 / rows["pet_sent_per_s_b4_after"])
    assert rows["measured_speedup_b1"] == pytest.approx(rows["pet_speedup_b1"])
    assert rows["ct2_int8_mb_after"] < rows["ct2_int8_mb_before"] < rows["ct2_float32_mb_before"]
    assert rows["engines_threads"] == 1

    text = format_report("t", rows)
    table = text[text.index("speed in sentences/s"):].splitlines()
    assert "of ideal" in table[1]
    for name in ENGINE_ROWS:
        assert sum(line.strip().startswith(name + " ") for line in table) == 2, name
    assert "size on disk: CTranslate2 float32" in text and "CTranslate2 int8" in text
    assert "latency batch" not in text  # the table replaces pet's own lines


def test_prune_stage_reports_engines(demo_root, pretrained, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    from pet.stages import run_stage

    run = tmp_path / "run"
    result = run_stage(compose_cfg(demo_root, *TINY, *PRUNE, "pruning.pruning_period=0", "pruning.report_bleu=false",
                                   "pruning.report_latency=true", "pruning.latency_batch_sizes=[1,4]",
                                   "pruning.latency_repeats=1", "trainer.num_threads=1", f"init_from={pretrained}",
                                   f"paths.run_dir={run}"))
    out = capsys.readouterr().out
    for name in ENGINE_ROWS:
        assert f"\n  {name} " in out, name
    saved = json.loads((run / "result.json").read_text())["metrics"]
    for key in ("ct2_int8_sent_per_s_b1_after", "ct2_float32_speedup_vs_ideal_b4", "ct2_int8_mb_after",
                "pet_sent_per_s_b4_before", "ms_per_sentence_b1_after"):
        assert key in saved and key in result.metrics, key
    assert "CTranslate2 int8" in (run / "prune_report.txt").read_text()
