"""DistributedDataParallel on 2 gloo processes = one process on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pet.checkpoint import load_checkpoint
from tests.conftest import DEMO_DATA, compose_cfg

TRAIN = [*DEMO_DATA, "stage=pretrain", "model=transformer_tiny", "model.encoder_embed_dim=32",
         "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
         "model.dropout=0", "trainer.max_tokens=600", "optim.warmup_updates=5", "optim.lr=2e-3",
         "trainer.max_update=4", "trainer.log_interval=1", "trainer.num_threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(root, run_dir, update_freq):
    from pet.stages import run_stage

    cfg = compose_cfg(root, *TRAIN, f"trainer.update_freq={update_freq}", f"paths.run_dir={run_dir}")
    return run_stage(cfg)


def ddp_worker(rank, world, port, root, run_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train(root, run_dir, update_freq=1)
    finally:
        dist.destroy_process_group()


def test_ddp_on_two_gloo_processes_matches_single_process(demo_root, tmp_path):
    single = train(demo_root, tmp_path / "single", update_freq=2)
    mp.spawn(ddp_worker, args=(2, free_port(), demo_root, tmp_path / "ddp"), nprocs=2, join=True)
    a = load_checkpoint(tmp_path / "single" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert a["trainer"]["num_updates"] == b["trainer"]["num_updates"] == 4
    assert b["trainer"]["target_tokens"] == a["trainer"]["target_tokens"]  # same global batches
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=2e-5, rtol=1e-4, msg=f"{name} differs")
    assert abs(a["trainer"]["last_valid_loss"] - b["trainer"]["last_valid_loss"]) < 1e-4
    assert single.metric == pytest.approx(b["trainer"]["best_valid_loss"], abs=1e-4)
