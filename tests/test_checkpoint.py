import pytest
import torch

from pet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pet.errors import CheckpointError
from tests.conftest import random_batch, small_model


def state_of(model):
    return {"spec": model.spec.to_dict(), "model": model.state_dict(), "src_dict": ["a"], "tgt_dict": ["b"]}


def test_checkpoint_rebuilds_the_model_with_no_other_input(tmp_path):
    model = small_model().eval()
    save_checkpoint(state_of(model), tmp_path / "m.pt")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt")).eval()
    b = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(b.src_tokens, b.prev_output_tokens)[0], loaded(b.src_tokens, b.prev_output_tokens)[0])


def test_missing_truncated_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(state_of(small_model()), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "notes.txt").write_text("e" * 101 + "\nnot a checkpoint at all\n")
    with pytest.raises(CheckpointError, match="not a readable pet checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")  # a bare tensor, e.g. one exported weight
    with pytest.raises(CheckpointError, match="holds a Tensor, not a checkpoint dict"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(state_of(small_model(seed=1)), path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(state_of(small_model(seed=2)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_long_wrapped_message_is_cut_at_a_clause_not_mid_word():
    from pet.errors import brief

    msg = "size mismatch for encoder.layers.0.fc1.weight: copying a param with shape [512, 256] from checkpoint, " * 5
    short = brief(ValueError(msg), 120)
    assert len(short) <= 124 and short.endswith(" ...") and short[:-4].rstrip().endswith(",")
    assert brief(ValueError("short one\nsecond line")) == "short one"
