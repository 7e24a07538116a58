"""What the ranks of a multi-process (DDP) run exchange so that they take the
same steps: summed token counts and logs, one stop decision, rank 0's values.
Callers use these only when there is more than one rank."""

from __future__ import annotations

import torch
import torch.distributed as dist


def summed(values: list, dtype: torch.dtype, device: torch.device) -> list:
    """``values`` summed element-wise over all ranks."""
    t = torch.tensor(values, dtype=dtype, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any."""
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_rank0(value: float, device: torch.device) -> float:
    """Rank 0's ``value``, on every rank."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())
