"""Data-parallel training over processes (``torchrun``): the helpers the trainers use.

Every process runs its own environments on its share of the pairs and keeps its own replay buffer; gradients are
averaged over processes before every optimiser step, so the replicas stay identical (the reduction
``DistributedDataParallel`` performs). DDP's module wrapper itself is not used: one SAC update runs four separate
backward passes through overlapping modules (critic, planner with the critic frozen, temperature, planner+actor
auxiliary loss), and DDP's reducer requires every wrapped parameter to receive a gradient once per forward.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "local_device",
    "broadcast_module",
    "average_gradients",
    "broadcast_values",
    "gather_to_first",
    "barrier",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or ``cuda`` without an index) -> this process's GPU (``LOCAL_RANK``) when CUDA is present; ``auto``
    without CUDA -> CPU. A CUDA device becomes the current one (collectives such as :func:`gather_to_first`
    communicate through it)."""
    if device in (None, "auto") and not torch.cuda.is_available():
        return torch.device("cpu")
    if device in (None, "auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of process ``src`` to every process."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def average_gradients(params: list[torch.Tensor]) -> None:
    """All-reduce the gradients of ``params`` (one flat buffer) and divide by the number of processes."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def broadcast_values(values: list[float], src: int = 0) -> list[float]:
    """Process ``src``'s numbers on every process (decisions that must agree: stop, learning-rate phase)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src)
    return t.cpu().tolist()


def gather_to_first(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` (picklable), as a list by rank on process 0; None on the others."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    if is_distributed():
        dist.barrier()
