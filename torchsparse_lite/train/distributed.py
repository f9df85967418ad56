"""Data-parallel helpers: process-group setup from torchrun's environment, sharding, reductions.

``torchrun --nproc_per_node=N -m torchsparse_lite train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the
training command then joins a process group (NCCL on GPUs, gloo on the CPU),
wraps the model in ``DistributedDataParallel`` and shards every batch by
sample. Without those variables everything runs in one process.

BatchNorm: each rank normalises with its own batch statistics (no
SyncBatchNorm: with one or two scans per rank the per-rank statistics are
already computed over thousands of voxels). DDP broadcasts rank 0's running
statistics before every training forward; at the end of each epoch the
running statistics are averaged over ranks (:func:`average_buffers`), so all
ranks evaluate and checkpoint identical weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank, world_size, local_rank: as set by torchrun (0, 1, 0 alone).
        device: the torch device this process computes on.
        backend: "nccl", "gloo" or None when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; CUDA uses GPU ``local_rank``."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is available; use --device cpu")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's variables (or run alone).

    Returns:
        The :class:`DistContext`; ``world_size == 1`` without ``WORLD_SIZE`` > 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = pick_device(device, local)
    if world <= 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op when alone)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks (returns a new tensor on ``t``'s device; no-op alone)."""
    if not ctx.distributed:
        return t
    out = t.detach().clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def all_gather_objects(obj: object, ctx: DistContext) -> list:
    """Gather one picklable object from every rank (``[obj]`` alone)."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks, in place.

    Each rank's last forward updated its running statistics from its own
    shard; averaging them at the end of an epoch makes every rank evaluate and
    checkpoint identical weights.
    """
    if not ctx.distributed:
        return
    for buf in model.buffers():
        if buf.dtype.is_floating_point:
            dist.all_reduce(buf.data, op=dist.ReduceOp.SUM)
            buf.data /= ctx.world_size
