"""The benchmark carry: a long run's state taken to another machine goes on where it was."""

import importlib.util
import json
import shutil
import sys

import torch

from pet.checkpoint import load_checkpoint, save_checkpoint
from pet.stages import run_stage
from tests.conftest import REPO, TINY, compose_cfg

_spec = importlib.util.spec_from_file_location("bench_carry", REPO / "benchmarks" / "bench_carry.py")
bench_carry = sys.modules["bench_carry"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_carry)  # a benchmark script's module, not part of the pet package
CarryPolicy, pack, unpack = bench_carry.CarryPolicy, bench_carry.pack, bench_carry.unpack

TRAIN = [*TINY, "stage=pretrain", "trainer.save_interval_updates=3", "trainer.max_epoch=0", "trainer.patience=0"]


def train(demo_root, run_dir, updates: int) -> dict:
    run_stage(compose_cfg(demo_root, *TRAIN, f"trainer.max_update={updates}", f"paths.run_dir={run_dir}"))
    return json.loads((run_dir / "result.json").read_text())


def test_unfinished_run_resumes_on_another_machine_at_its_update_with_fresh_moments(demo_root, tmp_path, caplog):
    here, there, carry = tmp_path / "here", tmp_path / "there", tmp_path / "carry"
    train(demo_root, here / "teacher", updates=6)
    # as if the session had ended at update 6 of a longer run
    (here / "teacher" / "result.json").unlink()
    saved = load_checkpoint(here / "teacher" / "checkpoint_last.pt")
    saved["trainer"].update(finished=False, stop_reason="")
    save_checkpoint(saved, here / "teacher" / "checkpoint_last.pt")

    lines = pack(here, carry, CarryPolicy(needs_checkpoint=lambda name: False))
    assert lines[0].startswith("teacher: at update 6, checkpoint_last.pt, trainer.json")
    carried = torch.load(carry / "teacher" / "checkpoint_last.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in carried["model"].values() if v.is_floating_point())
    assert carried["optimizer"]["state"] == {} and carried["carried"]["optimizer_moments"] == "reset"

    assert unpack(carry, there) == ["teacher: resumes at update 6"]
    restored = load_checkpoint(there / "teacher" / "checkpoint_last.pt")
    for key, value in saved["model"].items():
        assert restored["model"][key].dtype == value.dtype
        assert torch.allclose(restored["model"][key], value, rtol=1e-3, atol=1e-4), key
    assert restored["trainer"] == saved["trainer"]
    assert torch.equal(restored["rng"]["torch"], saved["rng"]["torch"])

    with caplog.at_level("INFO", logger="pet.stages.fit"):
        result = train(demo_root, there / "teacher", updates=9)
    assert f"resuming from {there / 'teacher' / 'checkpoint_last.pt'}" in caplog.text
    assert result["metrics"]["num_updates"] == 9


def test_finished_stage_carries_its_result_exact_checkpoint_and_new_paths(demo_root, tmp_path):
    here, there, carry = tmp_path / "here", tmp_path / "there", tmp_path / "carry"
    result = train(demo_root, here / "teacher", updates=3)
    shutil.copytree(here / "teacher", here / "unneeded")
    (here / "commits.json").write_text('{"run": [{"commit": "abc"}]}')

    pack(here, carry, CarryPolicy(needs_checkpoint=lambda name: name == "teacher"))
    assert not list((carry / "unneeded").glob("*.pt")) and (carry / "unneeded" / "result.json").exists()
    unpack(carry, there)

    assert (there / "commits.json").read_text() == '{"run": [{"commit": "abc"}]}'
    moved = json.loads((there / "teacher" / "result.json").read_text())
    assert moved["checkpoint"] == result["checkpoint"].replace(str(here), str(there))
    original, restored = load_checkpoint(result["checkpoint"]), load_checkpoint(moved["checkpoint"])
    assert all(torch.equal(original["model"][k], restored["model"][k]) for k in original["model"])
    assert restored["optimizer"]["state"] == {}
    assert str(here) not in json.dumps(restored["config"]) and f"{there}/teacher" in json.dumps(restored["config"])
    last = load_checkpoint(here / "teacher" / "checkpoint_last.pt")["trainer"]
    assert json.loads((there / "teacher" / "trainer.json").read_text()) == last and last["num_updates"] == 3


def test_unpack_never_replaces_a_stage_this_machine_has(demo_root, tmp_path):
    here, carry = tmp_path / "here", tmp_path / "carry"
    train(demo_root, here / "teacher", updates=3)
    pack(here, carry, CarryPolicy(needs_checkpoint=lambda name: True))
    before = (here / "teacher" / "checkpoint_last.pt").stat().st_mtime_ns
    assert unpack(carry, here) == []
    assert (here / "teacher" / "checkpoint_last.pt").stat().st_mtime_ns == before


def test_packing_again_keeps_carried_stages_this_machine_lacks(demo_root, tmp_path):
    here, elsewhere, carry = tmp_path / "here", tmp_path / "elsewhere", tmp_path / "carry"
    train(demo_root, here / "teacher", updates=3)
    pack(here, carry, CarryPolicy(needs_checkpoint=lambda name: True))
    train(demo_root, elsewhere / "student", updates=3)  # a machine that never unpacked the teacher
    lines = pack(elsewhere, carry, CarryPolicy(needs_checkpoint=lambda name: True))
    assert "teacher: kept from the earlier carry" in lines
    assert sorted(json.loads((carry / "carried.json").read_text())) == ["student", "teacher"]
    assert unpack(carry, tmp_path / "new") == ["student: finished", "teacher: finished"]
    assert (tmp_path / "new" / "teacher" / "checkpoint_best.pt").exists()
