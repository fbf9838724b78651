"""Run metrics: one JSON line per logged step in RUN/metrics.jsonl, TensorBoard when installed.

On resume the file is cut back to the checkpoint's step, so the curve a resumed run
leaves behind is the curve of one uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.core.shards import write_bytes_atomic
from distill.train.checkpoint import TrainerState


def memory_gb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on a GPU, peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


@dataclass
class MetricsWindow:
    """The steps since the last logged record, which that record averages over."""

    tokens: int = 0  # real (non-padding) tokens of the whole global batches
    examples: int = 0
    seconds: float = 0.0  # wall time of the steps, optimizer included
    padded_tokens: int = 0  # tokens the model ran, padding included, over every process
    loss_sum: float = 0.0
    steps: int = 0

    def add(self, *, tokens: int, examples: int, seconds: float, padded_tokens: int,
            loss: float) -> None:
        self.tokens += tokens
        self.examples += examples
        self.seconds += seconds
        self.padded_tokens += padded_tokens
        self.loss_sum += loss
        self.steps += 1

    def record(self, progress: TrainerState, *, lr: float, grad_norm: float,
               memory: float, elapsed_s: float) -> dict:
        """One line of metrics.jsonl: the window's means and rates, the run's totals."""
        seconds = max(self.seconds, 1e-9)
        return {
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": self.loss_sum / max(self.steps, 1),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": self.tokens / seconds,
            "examples_per_s": self.examples / seconds,
            "padding_fraction": 1 - self.tokens / max(self.padded_tokens, 1),
            "memory_gb": memory,
            "examples_seen": progress.examples_seen,
            "tokens_seen": progress.tokens_seen,
            "elapsed_s": elapsed_s,
        }


class MetricsLog:
    def __init__(self, path: Path, *, enabled: bool, tensorboard: bool | str,
                 resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        if resume_step is not None and path.exists():
            _cut_to_step(path, resume_step)
        elif resume_step is None and path.exists():
            path.unlink()
        want_tb = tensorboard is True or (
            tensorboard == "auto" and importlib.util.find_spec("tensorboard") is not None)
        if want_tb:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(path.parent / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _cut_to_step(path: Path, step: int) -> None:
    """Keep the records up to the checkpoint a resume starts from.

    A kill can tear the last line mid-write; text after the last newline is dropped, never
    parsed.
    """
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    keep = [line for line in complete
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_bytes_atomic(path, "".join(line + "\n" for line in keep).encode("utf-8"))
