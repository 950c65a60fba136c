"""Ranks for data-parallel training: one process per device, launched by torchrun.

The networks are not wrapped in DistributedDataParallel: its docs rule out torch.autograd.grad
(R1 and path length are built on it), and its reducer expects each forward to be followed by a
backward reaching every parameter, which the alternating G/D phases and frozen blocks break.
Instead the gradients are averaged by one flat all_reduce per optimiser step (NVIDIA's stylegan3
scheme).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


@dataclass
class Ranks:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # this process group was started by setup_ranks (so ends with the run)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks in one flat all_reduce; a missing grad counts as zero."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for p, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = chunk.view_as(p)

    def broadcast_module_(self, module: torch.nn.Module) -> None:
        if self.world > 1:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def end(self) -> None:
        """Leave the process group if this run started it: no more collectives follow."""
        if self.owns_group:
            dist.barrier()
            dist.destroy_process_group()


def setup_ranks(device: str = "auto") -> Ranks:
    """One rank per process; under torchrun (WORLD_SIZE > 1) join the process group."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no GPU")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Ranks(rank(), world, torch_device, owns_group)
