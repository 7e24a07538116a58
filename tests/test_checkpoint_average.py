"""Checkpoint averaging: the element-wise mean of N checkpoints of one model, and stage=average."""

from pathlib import Path

import pytest
import torch

from pet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pet.checkpoint_average import average_checkpoints, best_n_checkpoints, last_epoch_checkpoints
from pet.errors import CheckpointError, ConfigError
from pet.pruning.gates import to_gated
from pet.stages import run_stage
from tests.conftest import compose_cfg, small_model

SRC = ["<s>", "<pad>", "</s>", "<unk>"] + [f"s{i}" for i in range(36)]
TGT = ["<s>", "<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(44)]


def state(seed: int, **overrides) -> dict:
    model = small_model(seed=seed, **overrides)
    return {"spec": model.spec.to_dict(), "model": model.state_dict(), "src_dict": list(SRC), "tgt_dict": list(TGT),
            "config": {"note": f"seed {seed}"}, "trainer": {"epoch": seed}, "optimizer": {"state": {}},
            "pruning_history": [{"seed": seed}]}


def write(path: Path, seed: int, **overrides) -> Path:
    save_checkpoint(state(seed, **overrides), path)
    return path


def test_averaging_copies_of_one_checkpoint_gives_that_checkpoint(tmp_path):
    paths = [write(tmp_path / f"c{i}.pt", seed=0) for i in range(3)]
    avg = average_checkpoints(paths)
    original = load_checkpoint(paths[0])["model"]
    assert avg["model"].keys() == original.keys()
    for key, value in original.items():
        assert avg["model"][key].dtype == value.dtype
        assert torch.equal(avg["model"][key], value), key
    model_from_checkpoint(avg)  # loads into the model it came from


def test_averaging_two_checkpoints_gives_their_mean_and_the_first_ones_other_fields(tmp_path):
    a, b = write(tmp_path / "a.pt", seed=1), write(tmp_path / "b.pt", seed=2)
    avg = average_checkpoints([a, b])
    ma, mb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    for key in ma:
        assert torch.allclose(avg["model"][key], (ma[key] + mb[key]) / 2, atol=1e-7), key
    assert not any(torch.equal(avg["model"][k], ma[k]) for k in ma if k.endswith("q_proj.weight"))
    # everything else is the first input's; a training run's resumption state is left out
    assert avg["config"] == {"note": "seed 1"} and avg["pruning_history"] == [{"seed": 1}]
    assert avg["trainer"] == {"epoch": 1} and "optimizer" not in avg and "format_version" not in avg
    assert avg["averaged"] == {"checkpoints": [str(a), str(b)], "count": 2}


def test_checkpoints_of_another_model_are_refused(tmp_path):
    a = write(tmp_path / "a.pt", seed=1)
    b = write(tmp_path / "b.pt", seed=2, encoder_ffn_dim=48)
    with pytest.raises(CheckpointError, match=r"b.pt is not the same model as .*a.pt \(their specs differ at encoder"):
        average_checkpoints([a, b])
    other = state(3)
    other["tgt_dict"] = TGT[:-1] + ["zz"]
    save_checkpoint(other, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="another target dictionary"):
        average_checkpoints([a, tmp_path / "c.pt"])


def test_checkpoints_of_a_shrinking_pruning_run_are_refused(tmp_path):
    """Their connectivity parameters differ: a mean would half-revive removed units."""
    gated = to_gated(small_model(seed=1))
    a = {**state(1), "spec": gated.spec.to_dict(), "model": gated.state_dict()}
    b = {**a, "model": dict(a["model"])}
    key = next(k for k in a["model"] if k.endswith(".c_fc"))
    b["model"][key] = a["model"][key].clone()
    b["model"][key][:3] = 0.2
    save_checkpoint(a, tmp_path / "a.pt")
    save_checkpoint(b, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=rf"different connectivity parameters \({key}\).*finetuned"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])


def run_folder(tmp_path: Path) -> Path:
    folder = (tmp_path / "train").resolve()
    folder.mkdir()
    for epoch in (3, 4, 5, 6):
        write(folder / f"checkpoint{epoch}.pt", seed=epoch)
    for seed, loss in ((10, 3.25), (11, 2.5), (12, 2.75)):
        write(folder / f"checkpoint.best_loss_{loss:.4f}.pt", seed=seed)
    write(folder / "checkpoint_last.pt", seed=6)
    return folder


def test_selection_helpers(tmp_path):
    folder = run_folder(tmp_path)
    assert [p.name for p in last_epoch_checkpoints(folder, 2)] == ["checkpoint6.pt", "checkpoint5.pt"]
    assert [p.name for p in best_n_checkpoints(folder, 2)] == ["checkpoint.best_loss_2.5000.pt",
                                                                "checkpoint.best_loss_2.7500.pt"]
    with pytest.raises(CheckpointError, match=r"4 epoch checkpoint\(s\).*trainer.keep_last_epochs=5"):
        last_epoch_checkpoints(folder, 5)
    with pytest.raises(CheckpointError, match=r"0 best checkpoint\(s\) by bleu.*trainer.keep_best_checkpoints=2"):
        best_n_checkpoints(folder, 2, "bleu")


def average(tmp_path: Path, *overrides: str):
    return run_stage(compose_cfg(tmp_path, "stage=average", f"paths.run_dir={tmp_path}/avg", *overrides))


def test_stage_averages_the_last_epochs_into_checkpoint_avg(tmp_path):
    folder = run_folder(tmp_path)
    result = average(tmp_path, f"init_from={folder / 'checkpoint_last.pt'}", "average.last_epochs=3")
    out = folder / "checkpoint_avg.pt"
    assert result.checkpoint == str(out) and result.metric == 3
    avg = load_checkpoint(out)
    models = [load_checkpoint(folder / f"checkpoint{e}.pt")["model"] for e in (4, 5, 6)]
    for key, value in avg["model"].items():
        assert torch.allclose(value, sum(m[key] for m in models) / 3, atol=1e-7), key
    assert avg["config"] == {"note": "seed 6"}  # the newest input's
    assert [Path(p).name for p in avg["averaged"]["checkpoints"]] == ["checkpoint6.pt", "checkpoint5.pt",
                                                                       "checkpoint4.pt"]

    best = average(tmp_path, f"init_from={folder}", "average.best=2", f"average.output={tmp_path}/best2.pt")
    avg = load_checkpoint(tmp_path / "best2.pt")
    assert best.checkpoint == str(tmp_path / "best2.pt") and avg["config"] == {"note": "seed 11"}


def test_stage_errors_name_the_setting_to_change(tmp_path):
    folder = run_folder(tmp_path)
    with pytest.raises(CheckpointError, match="trainer.keep_last_epochs=8"):
        average(tmp_path, f"init_from={folder}", "average.last_epochs=8")
    with pytest.raises(ConfigError, match="exactly one of average.last_epochs and average.best"):
        average(tmp_path, f"init_from={folder}", "average.last_epochs=2", "average.best=2")
    with pytest.raises(ConfigError, match="needs init_from"):
        average(tmp_path, "average.last_epochs=2")
