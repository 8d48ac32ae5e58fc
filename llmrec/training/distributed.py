"""Data-parallel training across processes, started by `torchrun` or `accelerate launch`.

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT), so llmrec needs
no code change and no flag to run distributed: `torchrun --nproc_per_node 4 -m llmrec.cli train`.
Without those variables everything runs in one process and this module does nothing.

Each process trains on its own shard of every batch; gradients are averaged across processes by
`torch.nn.parallel.DistributedDataParallel` (NCCL on CUDA, gloo on CPU), so every process holds the
same weights after every step. Only the main process (rank 0) writes files and shows progress.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from llmrec.errors import ConfigError

log = logging.getLogger(__name__)


def env_world_size() -> int:
    """The number of processes the launcher started (1 when not launched distributed)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number", fix="launch with torchrun") from exc


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True in a plain run and in the rank-0 process of a distributed one (the one that writes files)."""
    return env_rank() == 0


@dataclass
class Distributed:
    """This process's place in the job; `world_size == 1` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        """Join the process group the launcher prepared (initialised once per process)."""
        world = env_world_size()
        if world == 1:
            return cls()
        import torch.distributed as dist

        rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
            log.info("distributed training: rank %d of %d (%s)", rank, world, backend)
        return cls(rank=rank, world_size=world, local_rank=local, backend=backend)

    def device_for(self, device: torch.device) -> torch.device:
        """On CUDA each process drives its own GPU (cuda:LOCAL_RANK)."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """DistributedDataParallel around `module` (the module itself when not distributed)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def mean(self, value: float) -> float:
        """The mean of a number over all processes (the same result everywhere)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        if self.backend == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every process."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def shard(self, indices: Any) -> Any:
        """This process's contiguous share of a global batch of example indices."""
        if not self.enabled:
            return indices
        size = len(indices) // self.world_size
        return indices[self.rank * size : (self.rank + 1) * size]
