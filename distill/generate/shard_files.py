"""A generate shard's task: the input shard it reads and the files it writes.

What a restart reads back from those files (keys already done, rejections to retry, torn
tails, keys written twice) is ``distill.generate.durable``'s job, shared with
``distill judge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.generate.durable import ShardFiles


@dataclass(frozen=True)
class ShardTask:
    """Everything one shard needs; plain data so it can travel to a Ray worker."""

    split: str
    name: str
    input_path: str
    out: str
    image_root: str | None
    teacher_set: str
    flush_every: int = 256
    flush_seconds: float = 5.0
    retry_rejected: bool = False

    @property
    def traces_path(self) -> Path:
        return Path(self.out) / "traces" / self.split / self.name

    @property
    def rejects_path(self) -> Path:
        return Path(self.out) / "rejects" / self.split / self.name

    @property
    def files(self) -> ShardFiles:
        return ShardFiles(self.traces_path, self.rejects_path, "trace_key",
                          self.retry_rejected, self.flush_every, self.flush_seconds)
