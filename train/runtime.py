"""Where a run executes: device, precision, threads, and (under ``torchrun``) the process group.

The same ``distill train`` command runs on one process or under ``torchrun``: the env
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) are enough to join the group
(NCCL on GPUs, gloo on CPU). Nothing else changes for the user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from distill.train.config import TrainConfig


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def default_threads() -> int:
    """CPU threads for one training process.

    Measured on the 2-core dev machine with the tiny-digits student: on an idle machine
    2 threads gave 1.5x the tokens/s of 1 thread, but with any other busy process (tests,
    another training run) 2 threads fell to a quarter of that, waiting on each other at
    every op. So on <= 2 cores per process the default is 1 thread, which also lets two
    runs (e.g. a CoT and a direct student) train side by side, one core each. Set
    ``threads: 2`` for a lone run on an idle 2-core machine.
    """
    cores = os.cpu_count() or 1
    per_process = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return 1 if per_process <= 2 else per_process - 1


def setup_runtime(config: TrainConfig) -> Runtime:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    threads = default_threads() if config.threads == "auto" else int(config.threads)
    torch.set_num_threads(threads)
    if config.precision == "bf16":
        dtype = torch.bfloat16
    elif config.precision == "fp32":
        dtype = torch.float32
    else:
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16_ok else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, dtype, rank, world_size, local_rank)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
