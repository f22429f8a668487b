"""torch.distributed plumbing for ``torchrun``: one process per rank, or plain single-process.

``init_distributed`` reads only ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` (set by torchrun
or a Kubeflow PyTorchJob); when they are absent it returns a single-process context and
never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from kubetrade.errors import TrainingError

__all__ = [
    "DistributedContext",
    "init_distributed",
    "destroy_distributed",
    "resolve_device",
    "seed_everything",
    "broadcast_object",
    "all_reduce_mean",
]

T = TypeVar("T")

#: Seconds a collective waits for the other ranks before failing (default 600).
TIMEOUT_ENV = "KUBETRADE_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process with side effects (files, MLflow, printing)."""
        return self.rank == 0


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if preference not in ("auto", "cpu", "cuda"):
        raise TrainingError(f"hardware.device {preference!r} is not one of auto, cpu, cuda")
    if preference == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "hardware.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'"
        )
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise TrainingError(f"environment variable {name}={value!r} is not an integer") from exc


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA), if any."""
    rank, local_rank, world_size = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
    if rank is None or world_size is None:
        return DistributedContext(device=resolve_device(device))
    local_rank = rank if local_rank is None else local_rank
    torch_device = resolve_device(device, local_rank)
    if world_size == 1:
        return DistributedContext(rank, local_rank, 1, torch_device)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        # a bounded collective timeout: a rank that died (kill -9, OOM) makes the others fail
        # within this time instead of hanging, so torchrun's --max-restarts can restart them
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
    return DistributedContext(rank, local_rank, world_size, torch_device, backend)


def destroy_distributed() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def broadcast_object(obj: T, ctx: DistributedContext, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (identity when single-process)."""
    if not ctx.is_distributed:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[no-any-return]


def all_reduce_mean(values: dict[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Average scalar values over ranks (identity when single-process)."""
    if not ctx.is_distributed or not values:
        return values
    keys = list(values)  # same insertion order on every rank
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= ctx.world_size
    return dict(zip(keys, tensor.tolist(), strict=True))
