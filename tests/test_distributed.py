"""DistributedDataParallel on 2 gloo processes = one process on the same global batches,
for an epoch whose batch count the world size does not divide (no rank waits for a
collective the others never reach), across epoch ends, in pretrain and in prune."""

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pet.checkpoint import load_checkpoint
from tests.conftest import DEMO_DATA, compose_cfg

BASE = [*DEMO_DATA, "model=transformer_tiny", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
        "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "model.dropout=0", "optim.warmup_updates=5",
        "optim.lr=2e-3", "trainer.log_interval=1", "trainer.num_threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def odd_max_tokens(root) -> int:
    """A batch budget that cuts the demo's training split into an odd number of batches."""
    from pet.data.batching import TokenBatchSampler
    from pet.stages.common import load_data

    train = load_data(compose_cfg(root, *DEMO_DATA, "stage=pretrain")).split("train")
    for max_tokens in range(600, 900, 10):
        n = len(TokenBatchSampler(train.src_sizes, train.tgt_sizes, max_tokens, batch_size_multiple=8))
        if n % 2:
            return max_tokens
    raise AssertionError("no odd batch count found")


def run(root, overrides, update_freq):
    from pet.stages import run_stage

    return run_stage(compose_cfg(root, *BASE, *overrides, f"trainer.update_freq={update_freq}"))


def ddp_worker(rank, world, port, root, overrides):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run(root, overrides, update_freq=1)
    finally:
        dist.destroy_process_group()


class FastClock:
    """``time`` with a perf_counter running 3x fast: a rank whose clock runs ahead."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter():
        return 3 * time.perf_counter()


def ddp_worker_fast_clock_on_rank1(rank, world, port, root, overrides):
    if rank == 1:
        import pet.training.trainer

        pet.training.trainer.time = FastClock()
    ddp_worker(rank, world, port, root, overrides)


def spawn_ddp(root, overrides, seconds=600, worker=ddp_worker):
    """Two gloo ranks; a hang (ranks out of step in their collectives) fails the test instead of stalling it."""
    ctx = mp.spawn(worker, args=(2, free_port(), root, overrides), nprocs=2, join=False)
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"DDP ranks still running after {seconds}s: a collective is waiting on a rank that left")


def same_model(a, b):
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, atol=3e-5, rtol=1e-4, msg=f"{name} differs")


def test_ddp_with_an_odd_batch_count_matches_one_process(demo_root, tmp_path):
    max_tokens = odd_max_tokens(demo_root)
    train = ["stage=pretrain", f"trainer.max_tokens={max_tokens}", "trainer.max_epoch=2"]
    single = run(demo_root, [*train, f"paths.run_dir={tmp_path}/single"], update_freq=2)
    spawn_ddp(demo_root, [*train, f"paths.run_dir={tmp_path}/ddp"])
    a = load_checkpoint(tmp_path / "single" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert a["trainer"]["num_updates"] == b["trainer"]["num_updates"] and a["trainer"]["epoch"] == 3
    assert b["trainer"]["target_tokens"] == a["trainer"]["target_tokens"]  # same global batches
    same_model(a, b)
    assert single.metric == pytest.approx(b["trainer"]["best_valid_loss"], abs=1e-4)

    # prune: the same shrink schedule (steps counted alike on every rank) and the same pruned model
    prune = ["stage=prune", f"trainer.max_tokens={max_tokens}", "pruning.pruning_period=2", "shrink.unit=step",
             "pruning.importance_batches=2", "pruning.report_latency=false", "pruning.report_bleu=false",
             f"init_from={tmp_path}/single/checkpoint_best.pt"]
    run(demo_root, [*prune, f"paths.run_dir={tmp_path}/prune_single"], update_freq=2)
    spawn_ddp(demo_root, [*prune, f"paths.run_dir={tmp_path}/prune_ddp"])
    pa = load_checkpoint(tmp_path / "prune_single" / "checkpoint_last.pt")
    pb = load_checkpoint(tmp_path / "prune_ddp" / "checkpoint_last.pt")
    assert pa["hooks"] == pb["hooks"] and pa["hooks"][0]["done"] == pa["hooks"][0]["total"] > 0
    same_model(pa, pb)
    same_model(load_checkpoint(tmp_path / "prune_single" / "checkpoint_pruned.pt"),
               load_checkpoint(tmp_path / "prune_ddp" / "checkpoint_pruned.pt"))


def test_ddp_ranks_stop_together_on_a_time_budget_though_their_clocks_differ(demo_root, tmp_path):
    """trainer.max_time_minutes under DDP: every rank stops at rank 0's time, so a
    rank whose clock runs ahead cannot leave the others waiting in a collective."""
    train = ["stage=pretrain", "trainer.max_epoch=200", "trainer.max_time_minutes=0.05", "trainer.max_tokens=600",
             f"paths.run_dir={tmp_path}/ddp"]
    spawn_ddp(demo_root, train, seconds=120, worker=ddp_worker_fast_clock_on_rank1)
    state = load_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")["trainer"]
    assert state["finished"] and state["stop_reason"] == "max_time"


def test_ddp_prune_in_two_iterations(demo_root, tmp_path):
    """Each iteration starts from the previous one's checkpoint_pruned.pt, which rank 0
    alone writes: the other ranks wait for it, and every rank ends with the chain's result."""
    train = ["stage=pretrain", "trainer.max_tokens=600", "trainer.max_epoch=1", f"paths.run_dir={tmp_path}/base"]
    run(demo_root, train, update_freq=1)
    prune = ["stage=prune", "trainer.max_tokens=600", "pruning.pruning_period=1", "shrink.unit=step",
             "pruning.pruning_iter=2", "pruning.importance_batches=2", "pruning.report_latency=false",
             "pruning.report_bleu=false", f"init_from={tmp_path}/base/checkpoint_best.pt",
             f"paths.run_dir={tmp_path}/prune_ddp"]
    spawn_ddp(demo_root, prune, seconds=300)
    for i in (1, 2):
        assert (tmp_path / "prune_ddp" / f"iter{i}" / "checkpoint_pruned.pt").is_file()
    assert (tmp_path / "prune_ddp" / "result.json").is_file()
