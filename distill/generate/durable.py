"""Keyed, exactly-once output shards: what generation and judging share.

One unit of work (one input shard) writes two files: its records (Trace or Judgement
records, each with a deterministic key) and its rejections (``Rejection.key`` = the
record key it stands for). The shard is complete when its records file exists under its
final name: it is renamed into place last, after its rejects file. An incomplete shard
lives in ``.partial`` files that are flushed and fsynced every ``flush_every`` records /
``flush_seconds``; a restart repairs a torn last line, collects the keys already written
and asks only for the others.

A key is done when it has a record, or a *permanent* rejection (unparseable output, a 4xx
from the server, a missing image). A *transient* rejection (rate limits, 5xx, timeouts
that outlived the engine's retries) is retried by the next run: the complete shard
holding it is reopened (its files renamed back to ``.partial``), the stale rejection
dropped, and the key asked again; ``retry_rejected`` retries permanent ones too. At the
end of every run each requested key is in exactly one place.

A key written twice (by two runs at once, before outputs were locked: see
``distill.core.locks``) is never trusted: a complete shard holding one is reopened, and a
partial one keeps the first line of each key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.errors import DistillError, InputError
from distill.core.shards import (
    DuplicateKeyError,
    ShardWriter,
    count_lines,
    dedupe_lines,
    fsync_dir,
    iter_records,
    iter_unique,
    partial_path,
    repair_partial,
    shard_ref,
    write_bytes_atomic,
    write_json_atomic,
)
from distill.core.text import parse_json
from distill.schemas import Rejection, ShardRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardFiles:
    """Where one unit of work's outcomes go, and how they are keyed and flushed."""

    records: Path
    rejects: Path
    key_field: str  # "trace_key" | "judgement_key"
    retry_rejected: bool = False
    flush_every: int = 256
    flush_seconds: float = 5.0


@dataclass(frozen=True)
class ShardStart:
    """What is already on disk when a shard's work begins."""

    done: set[str]
    repaired_bytes: int
    reopened: bool
    duplicates_removed: int = 0


def record_keys(path: Path, key_field: str) -> set[str]:
    """The keys of a records file (each once: a repeated key is refused with its line)."""
    return {key for _, _, key in iter_unique(path, key_field)}


def duplicated(files: ShardFiles) -> bool:
    """Does a complete shard hold a key twice (in its records, its rejects, or both)? Such
    a shard was written by two runs at once; it is repaired, never trusted."""
    try:
        records = record_keys(files.records, files.key_field)
        rejected = {key for _, _, key in iter_unique(files.rejects, "key")} \
            if files.rejects.exists() else set()
    except DuplicateKeyError as exc:
        log.warning("%s; repairing the shard", exc)
        return True
    both = records & rejected
    if both:
        log.warning("%s and %s both hold key %s; repairing the shard", files.records,
                    files.rejects, min(both))
    return bool(both)


def _rejections(path: Path) -> dict[str, Rejection]:
    """Rejections by key; a later line for the same key wins."""
    return {r.key: r for r in iter_records(path, Rejection)}


def _retryable(rejection: Rejection, retry_rejected: bool) -> bool:
    return retry_rejected or not rejection.permanent


def complete_keys(files: ShardFiles) -> set[str] | None:
    """Keys a *complete* shard settles for good (records and rejections this run keeps);
    None if the shard is not complete."""
    if not files.records.exists() or partial_path(files.rejects).exists():
        return None
    done = record_keys(files.records, files.key_field)
    if files.rejects.exists():
        done |= {key for key, r in _rejections(files.rejects).items()
                 if not _retryable(r, files.retry_rejected)}
    return done


def needs_work(files: ShardFiles, wanted: set[str] | None = None) -> bool:
    """Must this shard be (re)opened? Not when it is complete, holds nothing this run
    retries, and (when ``wanted`` is given) already settles every wanted key."""
    if not files.records.exists():
        return True
    if partial_path(files.rejects).exists():  # a reopening cut short: finish it
        return True
    if duplicated(files):
        return True
    if files.rejects.exists() and any(_retryable(r, files.retry_rejected)
                                      for r in iter_records(files.rejects, Rejection)):
        return True
    if wanted is None:
        return False
    done = complete_keys(files)
    return done is None or not wanted <= done


def begin(files: ShardFiles) -> ShardStart:
    """Reopen a complete shard if needed, repair torn tails and keys written twice, drop
    rejections this run retries; the keys already settled."""
    reopened = False
    if files.records.exists():
        _reopen(files)
        reopened = True
    done, repaired, removed = _prepare_partials(files)
    return ShardStart(done, repaired, reopened, removed)


def _reopen(files: ShardFiles) -> None:
    """Turn a complete shard back into a partial one. Records first: from that moment the
    shard is incomplete, so a crash before the rejects move is picked up by
    ``_prepare_partials`` (which moves a final rejects file of an incomplete shard)."""
    for final in (files.records, files.rejects):
        if final.exists():
            os.replace(final, partial_path(final))
            fsync_dir(final.parent)


def _prepare_partials(files: ShardFiles) -> tuple[set[str], int, int]:
    """(done keys, bytes cut from torn tails, duplicated record lines removed)."""
    records_partial = partial_path(files.records)
    rejects_partial = partial_path(files.rejects)
    if files.rejects.exists():  # a crash between committing rejects and records
        os.replace(files.rejects, rejects_partial)
        fsync_dir(files.rejects.parent)
    repaired = removed = 0
    done: set[str] = set()
    if records_partial.exists():
        repaired += repair_partial(records_partial)
        removed = dedupe_lines(records_partial, files.key_field)
        done = record_keys(records_partial, files.key_field)
    if rejects_partial.exists():
        repaired += repair_partial(rejects_partial)
        rejections = _rejections(rejects_partial)
        keep = [r for key, r in rejections.items()
                if key not in done and not _retryable(r, files.retry_rejected)]
        if len(keep) != count_lines(rejects_partial):
            write_bytes_atomic(rejects_partial,
                               b"".join(r.model_dump_json().encode() + b"\n" for r in keep))
        done.update(r.key for r in keep)
    return done, repaired, removed


@dataclass
class ShardWriters:
    """The open records and rejects writers of one shard."""

    records: ShardWriter
    rejects: ShardWriter

    def commit(self) -> None:
        """Rejects first, records last: the records file under its final name is what
        marks the shard complete."""
        self.rejects.commit()
        self.records.commit()


@contextmanager
def open_writers(files: ShardFiles) -> Iterator[ShardWriters]:
    """Append to the shard's partial files; left in place (for a resume) unless committed."""
    records = ShardWriter(files.records, flush_every=files.flush_every,
                          flush_seconds=files.flush_seconds)
    rejects = ShardWriter(files.rejects, flush_every=files.flush_every,
                          flush_seconds=files.flush_seconds)
    try:
        yield ShardWriters(records, rejects)
    finally:
        records.close()
        rejects.close()


def complete_refs(out: Path, folder: str) -> list[ShardRef]:
    """Every complete shard ``OUT/<folder>/<split>/part-*.jsonl``, for a manifest."""
    root = out / folder
    if not root.exists():
        return []
    return [shard_ref(path, out) for path in sorted(root.glob("*/part-*.jsonl"))]


Mismatch = str | Callable[[Any, Any], str]  # a message, or one made of (old, new)


def check_plan(out: Path, plan: dict, must_match: list[tuple[str, Mismatch]]) -> None:
    """One output folder holds one job: write ``OUT/plan.json`` on the first run; on later
    runs refuse (with the message given, or what ``message`` makes of the two values) when
    a ``must_match`` key differs from the plan. A key the folder's plan does not hold yet
    (written by a version without that check) is added to it."""
    path = out / "plan.json"
    if not path.exists():
        write_json_atomic(path, plan)
        return
    old = parse_json(path.read_bytes(), file=path)
    if not isinstance(old, dict):
        raise InputError("not a plan (a JSON object)", file=path, reason="bad_json")
    for key, message in must_match:
        if key in old and old[key] != plan[key]:
            raise DistillError(message(old[key], plan[key]) if callable(message) else message)
    missing = {key: plan[key] for key, _ in must_match if key not in old}
    if missing:  # a folder written before this check existed: what it holds from now on
        write_json_atomic(path, {**old, **missing})
