"""Run metrics: one JSON line per logged step in RUN/metrics.jsonl, TensorBoard when installed.

On resume the file is cut back to the checkpoint's step, so the curve a resumed run
leaves behind is the curve of one uninterrupted run. The file is read back (on resume, for
the final manifest's means, for progress bars), so a line that is not one of its records
(torn by a kill, or changed on disk) is left out, and said so, never parsed into a crash.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.core.errors import DistillError
from distill.core.shards import write_bytes_atomic
from distill.train.checkpoint import TrainerState

log = logging.getLogger(__name__)


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
        installed = importlib.util.find_spec("tensorboard") is not None
        if tensorboard is True and not installed:
            raise DistillError("field 'tensorboard': true needs the tensorboard package, which "
                               "is not installed (pip install tensorboard); 'auto' logs to it "
                               "only where it is")
        if tensorboard is True or (tensorboard == "auto" and installed):
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


def parse_record(line: str) -> dict | None:
    """One metrics record (an object with an integer step and a numeric loss and speed),
    or None for a line that is none."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not _count(record.get("step")) or not all(
            isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool)
            and math.isfinite(record[k]) for k in ("loss", "tokens_per_s")):
        return None
    return record


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_metrics(path: Path) -> list[dict]:
    """The complete records of a metrics file, in order (other lines left out, logged)."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return _records(path, text.split("\n")[:-1])[0]


def _records(path: Path, lines: list[str]) -> tuple[list[dict], list[str]]:
    """(records, their lines) of ``lines``; a line that is no record is logged and left."""
    records, kept = [], []
    for number, line in enumerate(lines, start=1):
        record = parse_record(line) if line.strip() else None
        if record is None:
            if line.strip():
                log.warning("%s:%d is not a metrics record; left out", path, number)
            continue
        records.append(record)
        kept.append(line)
    return records, kept


def _cut_to_step(path: Path, step: int) -> None:
    """Keep the records up to the checkpoint a resume starts from.

    A kill can tear the last line mid-write; text after the last newline is dropped, never
    parsed. Lines that are no record are dropped too.
    """
    text = path.read_bytes().decode("utf-8", errors="replace")
    records, lines = _records(path, text.split("\n")[:-1])
    keep = [line for record, line in zip(records, lines, strict=True) if record["step"] <= step]
    write_bytes_atomic(path, "".join(line + "\n" for line in keep).encode("utf-8"))
