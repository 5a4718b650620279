"""PyTorch's own distributed engine around ``fit``: torchrun starts the ranks, DDP syncs the gradients.

    apg train --data DIR --nproc 2 ...        # = torchrun --standalone --nproc_per_node 2 -m scripts.cli train ...
    dist = Dist.from_env()                    # rank, world, local rank from torchrun's environment (world 1 without)
    net = dist.wrap(model)                    # DDP over model.logit (gloo on CPU, NCCL on CUDA); model.logit alone
    with dist.join(net): ...                  # uneven shares: ranks that run out shadow the others' all-reduces
    merged = dist.gather(arrays)              # every rank's arrays, concatenated, on every rank

Multi-node is the same command under torchrun's rendezvous flags (docs/TRAINING.md). Rank 0 writes the run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Logits(nn.Module):
    """DDP wraps ``forward``: this module's forward is the model's logit, so the gradient hooks see it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.logit(x)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: str) -> str:
        """Joins the process group (gloo on CPU, NCCL on CUDA) and returns this rank's device."""
        if device.startswith("cuda"):
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(device)
        if self.on and not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return device

    def stop(self) -> None:
        """Every rank leaves together: a rank that tears gloo down while another is still writing its files can
        abort (SIGABRT, "terminate called without an active exception", seen once on a loaded machine)."""
        if self.on and tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        net = Logits(model)
        if not self.on:
            return net
        ids = [torch.device(next(model.parameters()).device)] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(net, device_ids=ids)

    def join(self, net: nn.Module):
        return net.join() if isinstance(net, DistributedDataParallel) else contextlib.nullcontext()

    def gather(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.on:
            return arrays
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, arrays)
        return {k: np.concatenate([p[k] for p in parts]) for k in arrays}

    def gather_objects(self, obj) -> list:
        if not self.on:
            return [obj]
        parts: list = [None] * self.world
        tdist.all_gather_object(parts, obj)
        return parts

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.on:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, *values: float) -> list[float]:
        if not self.on:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        tdist.all_reduce(t)
        return t.tolist()

    def least(self, value: int) -> int:
        if not self.on:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return int(t.item())

    def barrier(self) -> None:
        if self.on:
            tdist.barrier()


def launch(argv: list[str], nproc: int, env: dict[str, str]) -> int:
    """``apg train ... --nproc N``: the same command under torchrun, N local ranks (its exit code)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "scripts.cli",
        *argv,
    ]
    env = {**os.environ, **env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(cmd, env=env).returncode
