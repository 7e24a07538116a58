"""stage=export end to end: a checkpoint in, a checked CTranslate2 folder out, raw text translated."""

from __future__ import annotations

import json
import logging
import sys

import pytest

ctranslate2 = pytest.importorskip("ctranslate2")

from pet.checkpoint import save_checkpoint  # noqa: E402
from pet.config.validate import validate  # noqa: E402
from pet.errors import ConfigError  # noqa: E402
from pet.export import CT2Translator, ExportError  # noqa: E402
from pet.generation.text_pipeline import TextPipeline  # noqa: E402
from pet.stages import run_stage  # noqa: E402
from pet.stages.common import load_data, resolved_config  # noqa: E402
from tests.conftest import DEMO_DATA, compose_cfg, small_model  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(demo_root):
    """A small random model on the demo corpus' dictionaries, saved as pet saves checkpoints."""
    cfg = compose_cfg(demo_root, "stage=evaluate", *DEMO_DATA)
    data = load_data(cfg)
    model = small_model(len(data.src_dict), len(data.tgt_dict), dropout=0.0)
    path = demo_root / "export_model.pt"
    save_checkpoint({"spec": model.spec.to_dict(), "model": model.state_dict(), "src_dict": data.src_dict.to_list(),
                     "tgt_dict": data.tgt_dict.to_list(), "config": resolved_config(cfg)}, path)
    return path


def test_export_stage_writes_a_checked_int8_folder_that_translates_raw_text(demo_root, checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    result = run_stage(compose_cfg(demo_root, "stage=export", f"init_from={checkpoint}", *DEMO_DATA,
                                   "export.quantization=int8", "export.check_sentences=20", "trainer.num_threads=1",
                                   "export.speed_batch_sizes=[1,8]", "export.speed_repeats=1", "export.speed_length=8",
                                   f"paths.run_dir={run}"))
    folder = run / "ct2-int8"
    assert result.stage == "export" and result.metric_name == "share_identical" and result.metric >= 0.99
    for name in ("model.bin", "config.json", "pet_layout.json", "pet_text.json", "bpe.codes", "export.json"):
        assert (folder / name).is_file(), name
    assert not [p for p in run.iterdir() if p.name.startswith(".ct2-int8")], "the float32 check folder is gone"
    record = json.loads((run / "export.json").read_text())
    assert record == json.loads((folder / "export.json").read_text())
    assert record["quantization"] == "int8" and record["check"]["sentences"] == 20
    assert 0 <= record["quantized_share_identical"] <= 1 and 0 <= record["quantized_weights_share_identical"] <= 1
    assert record["text_pipeline"] is True
    assert record["model_bytes"] < record["float32_model_bytes"]
    assert json.loads((run / "result.json").read_text())["metrics"]["share_identical"] == result.metric

    # Its speed, and pet's eager loop's on the same model, timed interleaved.
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("CTranslate2 int8:"))
    assert " sent/s at batch 1, " in line and " at batch 8 (pet eager: " in line
    for bs in (1, 8):
        assert record[f"ct2_int8_sent_per_s_b{bs}"] > 0 and record[f"pet_sent_per_s_b{bs}"] > 0
        assert record[f"ct2_int8_speedup_vs_pet_b{bs}"] == pytest.approx(
            record[f"ct2_int8_sent_per_s_b{bs}"] / record[f"pet_sent_per_s_b{bs}"])
        assert result.metrics[f"ct2_int8_sent_per_s_b{bs}"] == record[f"ct2_int8_sent_per_s_b{bs}"]
    assert record["speed_threads"] == 1 and record["speed_length"] == 8
    assert 0 < record["ct2_int8_mb"] * 2**20 < record["folder_bytes"]  # the engine's files, without the text pipeline

    # The engine alone loads it; with the saved text pipeline it translates raw text.
    assert ctranslate2.Translator(str(folder)).compute_type.startswith("int8")
    pipeline = TextPipeline.load(folder)
    raw = (demo_root / "data" / "demo" / "raw" / "test.de").read_text(encoding="utf-8").splitlines()[:3]
    hyps = CT2Translator(folder, threads=1).translate_tokens([pipeline.encode(line) for line in raw])
    assert all(isinstance(pipeline.decode(h[0][0]), str) for h in hyps)


def test_export_defaults_to_float32_and_validates_its_choices(demo_root, checkpoint, tmp_path):
    result = run_stage(compose_cfg(demo_root, "stage=export", f"init_from={checkpoint}", *DEMO_DATA,
                                   "export.check_sentences=10", "trainer.num_threads=1", f"export.dir={tmp_path / 'out'}",
                                   "export.measure_speed=false", f"paths.run_dir={tmp_path / 'run'}"))
    assert result.metric >= 0.99
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["quantization"] == "float32" and "quantized_share_identical" not in record
    assert "ct2_float32_sent_per_s_b1" not in record and record["ct2_float32_mb"] > 0
    assert record["model_bytes"] == record["float32_model_bytes"]

    # stage=translate on raw text: the export's lines are pet's lines.
    raw = demo_root / "data" / "demo" / "raw" / "test.de"
    for backend, model in (("pet", checkpoint), ("ctranslate2", tmp_path / "out")):
        run_stage(compose_cfg(demo_root, "stage=translate", f"init_from={model}", f"translate.backend={backend}",
                              f"translate.input={raw}", f"translate.output={tmp_path / backend}.txt",
                              "trainer.num_threads=1", f"paths.run_dir={tmp_path / backend}"))
    pet_lines = (tmp_path / "pet.txt").read_text(encoding="utf-8").splitlines()
    assert len(pet_lines) == 40 and (tmp_path / "ctranslate2.txt").read_text(encoding="utf-8").splitlines() == pet_lines
    for bad in ("export.quantization=int4", "export.format=onnx", "export.min_identical=1.5",
                "export.speed_repeats=0", "export.speed_batch_sizes=[]"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            validate(compose_cfg(tmp_path, "stage=export", bad))


def test_optional_export_without_ctranslate2_is_skipped_with_how_to_install(demo_root, checkpoint, tmp_path,
                                                                            monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` now raises ImportError
    common = ["stage=export", f"init_from={checkpoint}", *DEMO_DATA, f"paths.run_dir={tmp_path / 'run'}"]
    with caplog.at_level(logging.WARNING, logger="pet.stages.export"):
        result = run_stage(compose_cfg(demo_root, *common, "export.optional=true"))
    assert result.stage == "export" and result.metric is None and "serve" in result.metrics["skipped"]
    assert 'pip install -e ".[serve]"' in caplog.text
    assert not (tmp_path / "run" / "result.json").exists()  # not done: a later run with the engine exports
    with pytest.raises(ExportError, match="serve"):
        run_stage(compose_cfg(demo_root, *common))
