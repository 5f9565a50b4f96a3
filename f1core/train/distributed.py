"""Process-group helpers: one code path for a single process and for `torchrun` (gloo on CPU, nccl on GPU).

Every rank draws the same global batch and keeps its own contiguous slice, and each loss is normalised by the
global batch, so N ranks take the same optimisation steps as one process with the whole batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def init_from_environment() -> torch.device:
    """Join the process group `torchrun` describes in the environment; a plain run stays single-process."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_slice(global_batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (the batch size must divide by the world size)."""
    share = global_batch.shape[0] // world_size()
    return global_batch[rank() * share:(rank() + 1) * share]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value)
    return value


def global_mean(local_sum: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
    """sum / count over the whole global batch, scaled so that DDP's gradient average gives its gradient."""
    total = all_reduce_sum(local_count.detach().to(local_sum.dtype)).clamp_min(1)
    return local_sum * world_size() / total


def gather_with_local_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor; only this rank's slice carries gradient. A loss on the result must be
    multiplied by world_size() so that DDP's gradient average restores the full-batch gradient."""
    if not is_distributed():
        return local
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank()] = local
    return torch.cat(parts)


def barrier():
    if is_distributed():
        dist.barrier()


def any_rank(flag: bool, device) -> bool:
    """True on every rank when any rank raised the flag (stop requests, time-based checkpoints)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0)
