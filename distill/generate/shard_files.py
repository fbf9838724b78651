"""A generate shard's files on disk: the task that names them, and what a restart reads
back from them (keys already done, rejections to retry, torn tails, keys written twice).

A shard is complete when its traces file exists under its final name (renamed into place
last, after its rejects file). An incomplete shard lives in ``.partial`` files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from distill.core.shards import (
    DuplicateKeyError,
    count_lines,
    dedupe_lines,
    fsync_dir,
    iter_records,
    iter_unique,
    partial_path,
    repair_partial,
    write_bytes_atomic,
)
from distill.schemas import Rejection

log = logging.getLogger(__name__)


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


def trace_keys(path: Path) -> set[str]:
    """The keys of a traces file (each once: a repeated key is refused with its line)."""
    return {key for _, _, key in iter_unique(path, "trace_key")}


def duplicated(task: ShardTask) -> bool:
    """Does a complete shard hold a key twice (in its traces, its rejects, or both)? Such
    a shard was written by two runs at once; it is repaired, never trusted."""
    try:
        traces = trace_keys(task.traces_path)
        rejected = {key for _, _, key in iter_unique(task.rejects_path, "key")} \
            if task.rejects_path.exists() else set()
    except DuplicateKeyError as exc:
        log.warning("%s; repairing the shard", exc)
        return True
    both = traces & rejected
    if both:
        log.warning("%s and %s both hold key %s; repairing the shard", task.traces_path,
                    task.rejects_path, min(both))
    return bool(both)


def rejections_by_key(path: Path) -> dict[str, Rejection]:
    """Rejections by key; a later line for the same key wins."""
    return {r.key: r for r in iter_records(path, Rejection)}


def retryable(rejection: Rejection, retry_rejected: bool) -> bool:
    return retry_rejected or not rejection.permanent


def reopen(task: ShardTask) -> None:
    """Turn a complete shard back into a partial one. Traces first: from that moment the
    shard is incomplete, so a crash before the rejects move is picked up by
    ``_prepare_partials`` (which moves a final rejects file of an incomplete shard)."""
    for final in (task.traces_path, task.rejects_path):
        if final.exists():
            os.replace(final, partial_path(final))
            fsync_dir(final.parent)


def prepare_partials(task: ShardTask) -> tuple[set[str], int, int]:
    """Repair torn tails, drop duplicated traces and rejections that will be retried;
    return the done keys, the bytes cut and the duplicated lines removed."""
    traces_partial = partial_path(task.traces_path)
    rejects_partial = partial_path(task.rejects_path)
    if task.rejects_path.exists():  # a crash between committing rejects and traces
        os.replace(task.rejects_path, rejects_partial)
        fsync_dir(task.rejects_path.parent)
    repaired = 0
    done: set[str] = set()
    removed = 0
    if traces_partial.exists():
        repaired += repair_partial(traces_partial)
        removed = dedupe_lines(traces_partial, "trace_key")
        done = trace_keys(traces_partial)
    if rejects_partial.exists():
        repaired += repair_partial(rejects_partial)
        rejections = rejections_by_key(rejects_partial)
        keep = [r for key, r in rejections.items()
                if key not in done and not retryable(r, task.retry_rejected)]
        if len(keep) != count_lines(rejects_partial):
            write_bytes_atomic(rejects_partial,
                               b"".join(r.model_dump_json().encode() + b"\n" for r in keep))
        done.update(r.key for r in keep)
    return done, repaired, removed


def complete_shard_retries(task: ShardTask) -> bool:
    """Does a complete shard hold rejections this run should retry?"""
    if partial_path(task.rejects_path).exists():  # a reopening cut short: finish it
        return True
    if not task.rejects_path.exists():
        return False
    return any(retryable(r, task.retry_rejected)
               for r in iter_records(task.rejects_path, Rejection))
