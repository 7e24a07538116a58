"""Process-level setup shared by every stage: device, threads, seeds, logging."""

from __future__ import annotations

import datetime
import logging
import os
import random
import sys

import torch
import torch.distributed as dist

from pet.errors import ConfigError

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but no CUDA device is visible; use trainer.device=auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", local_cuda_index())
    return torch.device(name)


def local_cuda_index() -> int:
    """This process's GPU: LOCAL_RANK among the node's visible GPUs, or the only
    one visible (Slurm binding one GPU per task renumbers it 0 in every task)."""
    count = torch.cuda.device_count()
    return 0 if count == 1 else int(os.environ.get("LOCAL_RANK", "0"))


def configure_threads(requested: int) -> int:
    """CPU threads: explicit value, else SLURM_CPUS_PER_TASK (Slurm's task/none
    plugin binds nothing, so torch would otherwise use every core of the node)."""
    n = requested or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def seed_rank(seed: int) -> None:
    """Seed this process for training: ``seed + rank``, so that the ranks of a
    distributed job draw different dropout masks (weights are seeded alike
    before, with :func:`seed_everything`, and DDP broadcasts rank 0's anyway)."""
    seed_everything(seed + process_rank())


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, reseed: int | None = None) -> None:
    """Restore :func:`rng_state`'s ``state`` (saved by rank 0). ``reseed``: on
    ranks other than 0, draw fresh streams from (reseed, rank) instead, so that
    the ranks of a resumed distributed job keep distinct dropout masks
    (deterministically; rank 0 continues exactly)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU visible when saved; a job resumed with fewer GPUs restores those it has.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    if reseed is not None and process_rank() > 0:
        seed_everything(reseed * 1_000_003 + process_rank())


def setup_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stdout, level=level, format="%(asctime)s | %(name)s | %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def init_distributed() -> tuple[int, int]:
    """Join the process group that torchrun or submitit (tasks_per_node > 1) set up.

    Returns (rank, world size); (0, 1) for an ordinary single-process job.
    NCCL on GPUs, gloo on CPU (which is also how the suite tests DDP).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment  # noqa: PLC0415 - importing submitit reconfigures logging; only its jobs need it

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "nccl"
        torch.cuda.set_device(local_cuda_index())
    # Ranks wait for rank 0 at stage ends while it alone writes reports, decodes
    # validation BLEU, measures latency: longer than the 10-minute default.
    minutes = float(os.environ.get("PET_DIST_TIMEOUT_MINUTES", "180"))
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=minutes))
    rank = dist.get_rank()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)  # one rank speaks
    return rank, world


def process_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def wait_for_all_ranks() -> None:
    """A barrier in a distributed job (a no-op otherwise): where the other ranks
    wait while rank 0 alone writes files they are about to read."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def is_main_process() -> bool:
    return process_rank() == 0
