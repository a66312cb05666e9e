"""Distributed set-up for the trainers: one process per device, as ``torchrun`` starts them.

    torchrun --nproc_per_node N -m fastsr.train spsagan …

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; without them the trainer runs as a single
process and nothing here touches ``torch.distributed``. The process group uses nccl on CUDA and
gloo on the CPU. Each rank reads its own slice of every global batch (the trainers' samplers are
rank-sharded), rank 0 alone logs, validates and writes checkpoints, and DistributedDataParallel
averages gradients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fastsr.inference import pick_device


@dataclass(frozen=True)
class Dist:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a no-op.

    Under torchrun each rank takes ``cuda:LOCAL_RANK`` when the device is CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist(rank=0, world_size=1, device=pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, device=chosen)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def wrap(model: nn.Module, d: Dist, *, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel over ``model`` on ``d.device`` (the model itself when not distributed).
    ``find_unused_parameters``: some parameters get no gradient in some iterations (frozen stages).

    DDP broadcasts rank 0's parameters and buffers at construction, so anything a first forward
    initialises from data (SPSA's α) must be initialised before wrapping."""
    if not d.enabled:
        return model
    ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def mean_over_ranks(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average scalar logs over ranks (one all-reduce); unchanged when not distributed."""
    if not d.enabled or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=d.device)  # (n,)
    dist.all_reduce(t)
    return dict(zip(values, (t / d.world_size).tolist()))


def gather(obj, d: Dist) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when not
    distributed."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out
