"""Durable JSONL shards: written to a temp file, fsynced, then renamed.

The invariants every stage relies on:

* a file named ``part-NNNNN.jsonl`` is complete: it only appears by an atomic rename
  after its bytes were fsynced;
* work in progress lives in ``part-NNNNN.jsonl.partial``, flushed and fsynced every
  ``flush_every`` records or ``flush_seconds`` seconds, so a restart loses at most that;
* a crash can only leave a torn *last* line in a partial shard; reopening the shard
  cuts it off (and says so) instead of parsing it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from distill.core.errors import DiskFullError, DistillError, InputError, disk_full_from
from distill.core.text import decode, read_text
from distill.schemas import ShardRef, file_sha256

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".jsonl"
PARTIAL_SUFFIX = ".partial"
M = TypeVar("M", bound=BaseModel)


def shard_name(index: int) -> str:
    return f"part-{index:05d}{SHARD_SUFFIX}"


def partial_path(final_path: Path) -> Path:
    return final_path.with_name(final_path.name + PARTIAL_SUFFIX)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise_io(exc: OSError, path: Path) -> None:
    """Name the file when a write fails for lack of space; other errors pass unchanged."""
    if disk_full_from(exc) is not None:
        raise DiskFullError(path) from exc
    raise exc


def repair_partial(path: Path) -> int:
    """Cut a torn last line (no trailing newline) off a partial shard; return bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline; everything after it is a torn write.
        block = 1 << 16
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut != -1:
                keep = start + cut + 1
                break
            end = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("repaired %s: cut a torn last line of %d bytes left by a crash", path, size - keep)
    return size - keep


class ShardWriter:
    """Append records to a partial shard, then ``commit()`` it into place atomically.

    Reopening a partial shard after a crash repairs its tail and appends after the
    records already there; callers use ``existing_lines()`` to learn which work is done.
    """

    def __init__(
        self, final_path: Path | str, *, flush_every: int = 256, flush_seconds: float = 5.0
    ) -> None:
        self.final_path = Path(final_path)
        self.path = partial_path(self.final_path)
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        if self.final_path.exists():
            raise DistillError(f"{self.final_path} is already complete; refusing to rewrite it")
        self.repaired_bytes = repair_partial(self.path) if self.path.exists() else 0
        self._handle = open(self.path, "ab")  # noqa: SIM115 - closed in commit/close
        self._pending = 0
        self._last_flush = time.monotonic()

    def existing_lines(self) -> Iterator[str]:
        """Lines already in the partial shard (after repair), e.g. to collect done keys."""
        self._handle.flush()
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield line

    def write(self, record: BaseModel) -> None:
        self.write_line(record.model_dump_json())

    def write_line(self, line: str) -> None:
        try:
            self._handle.write(line.encode("utf-8") + b"\n")
        except OSError as exc:
            _raise_io(exc, self.path)
        self._pending += 1
        if (
            self._pending >= self.flush_every
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Make everything written so far durable (survives kill -9 and power loss)."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            _raise_io(exc, self.path)
        self._pending = 0
        self._last_flush = time.monotonic()

    def flush_if_due(self) -> None:
        """Flush records written more than ``flush_seconds`` ago (a writer that waits for
        its next record may wait long: a shard's last, slowest results)."""
        if self._pending and time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def commit(self) -> ShardRef:
        """fsync, rename to the final name, fsync the directory; return the shard's ref."""
        self.flush()
        self._handle.close()
        rows = count_lines(self.path)
        digest = file_sha256(self.path)
        os.replace(self.path, self.final_path)
        fsync_dir(self.final_path.parent)
        return ShardRef(name=self.final_path.name, sha256=digest, rows=rows)

    def close(self) -> None:
        """Leave the partial shard in place for a later resume (no commit).

        After a failed write (a full disk) the buffer still holds bytes that cannot be
        written; closing then fails again for the same reason, which ``flush`` already
        reported, so that second error is dropped. The partial shard may end in a torn
        line, which the next open repairs.
        """
        if self._handle.closed:
            return
        try:
            self.flush()
        finally:
            try:
                self._handle.close()
            except OSError:
                log.debug("closing %s after a failed write", self.path, exc_info=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def shard_ref(path: Path, relative_to: Path) -> ShardRef:
    """Describe a finished shard for a manifest."""
    return ShardRef(
        name=path.relative_to(relative_to).as_posix(),
        sha256=file_sha256(path),
        rows=count_lines(path),
    )


def iter_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line of a finished JSONL file.

    A finished file whose last line has no newline was torn by something other than our
    writer (our writers only rename complete files); that is reported, never parsed.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = decode(raw, file=path, line=number)
            if not line.endswith("\n") and line.strip():
                raise InputError(
                    "last line is truncated (no newline at end of file): the file was cut "
                    "off mid-write",
                    file=path,
                    line=number,
                    reason="truncated_file",
                )
            if line.strip():
                yield number, line


def line_key(line: str, field: str, *, file: Path | str, line_number: int) -> str:
    """The value of a top-level string field of one JSONL line (a record's key)."""
    try:
        value = json.loads(line)[field]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise InputError(f"not a valid record line (no {field})", file=file, line=line_number,
                         field=field, reason="bad_json") from None
    if not isinstance(value, str):
        raise InputError(f"{field} is not a string", file=file, line=line_number, field=field,
                         reason="schema_error")
    return value


def iter_unique(path: Path | str, field: str) -> Iterator[tuple[int, str, str]]:
    """(line number, text, key) for each line of a finished shard whose records are keyed
    by ``field``; a key seen twice is refused, naming both lines.

    Every stage writes each key once; a key twice in a committed shard means two writers
    shared it (two runs at once, before outputs were locked), so it is never trusted."""
    seen: dict[str, int] = {}
    for number, line in iter_lines(path):
        key = line_key(line, field, file=path, line_number=number)
        first = seen.setdefault(key, number)
        if first != number:
            raise DuplicateKeyError(path, number, field, key, first)
        yield number, line, key


class DuplicateKeyError(InputError):
    """A key written twice in one shard: where (file, line), and where it was first."""

    def __init__(self, path: Path | str, line: int, field: str, key: str, first: int) -> None:
        super().__init__(f"duplicate {field} {key} (first written at line {first}): two "
                         "writers shared this shard", file=path, line=line, field=field,
                         reason="duplicate_key")
        self.key = key


def dedupe_lines(path: Path | str, field: str) -> int:
    """Rewrite a shard keeping the first line of each key (atomically); lines removed."""
    path = Path(path)
    seen: set[str] = set()
    keep: list[bytes] = []
    removed = 0
    for number, line in iter_lines(path):
        key = line_key(line, field, file=path, line_number=number)
        if key in seen:
            removed += 1
            continue
        seen.add(key)
        keep.append(line.encode("utf-8"))
    if removed:
        write_bytes_atomic(path, b"".join(keep))
        log.warning("repaired %s: removed %d duplicated %s line(s)", path, removed, field)
    return removed


def iter_records(path: Path | str, model: type[M]) -> Iterator[M]:
    """Validate every line of a shard against ``model``; errors name file, line and field."""
    for number, line in iter_lines(path):
        yield parse_line(line, model, file=path, line=number)


def parse_line(text: str, model: type[M], *, file: Path | str, line: int) -> M:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise InputError(
                f"not valid JSON ({exc.errors()[0]['msg']})", file=file, line=line,
                reason="bad_json",
            ) from None
        raise InputError.from_validation(exc, file=file, line=line) from None


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Replace a file so that readers see the old content or the new, never half of it:
    temp file, fsync, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    _rename_into_place(path, lambda tmp: _write_synced(tmp, data))
    fsync_dir(path.parent)


def link_or_copy(source: Path | str, target: Path | str) -> None:
    """Put an immutable file at ``target``: a hard link when both are on one disk, else a
    copy fsynced before its rename; either way ``target`` appears whole or not at all. Only
    for files that no one outside the toolkit writes (a parent version's shards shared with
    its child inside the dataset store); a file from a user's folder goes through
    ``copy_immutable``. The caller fsyncs the folder once for many files (the dataset store
    does, and sweeps temp files of killed runs under its lock)."""
    source = Path(source)

    def place(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            _copy_bytes(source, tmp)

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _rename_into_place(target, place)


# Linux's FICLONE ioctl (_IOW(0x94, 9, int)): share the source's blocks copy-on-write.
_FICLONE = 0x40049409


def copy_immutable(source: Path | str, target: Path | str, *,
                   check: Callable[[Path], None] | None = None) -> None:
    """Put a read-only copy of ``source`` at ``target`` (whole or not at all): a reflink
    where the file system shares blocks copy-on-write (btrfs, XFS), else a byte copy,
    fsynced. Never a hard link: a link shares the inode, so writing the source (a user's
    image, edited in place) would change the copy too. ``check`` sees the copy before it
    is renamed into place and may refuse it (raise)."""
    source = Path(source)

    def place(tmp: Path) -> None:
        _copy_bytes(source, tmp, reflink=True)
        os.chmod(tmp, 0o444)
        if check is not None:
            check(tmp)

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _rename_into_place(target, place)


def _copy_bytes(source: Path, target: Path, *, reflink: bool = False) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        if not (reflink and _reflink(src.fileno(), dst.fileno())):
            shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _reflink(source_fd: int, target_fd: int) -> bool:
    try:
        import fcntl

        fcntl.ioctl(target_fd, _FICLONE, source_fd)
        return True
    except (ImportError, OSError):
        return False


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _rename_into_place(path: Path, fill: Callable[[Path], None]) -> None:
    """``fill`` a temp file named after this process beside ``path``, then rename it over
    ``path``; any failure removes the temp file (and names ``path`` if the disk is full)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        fill(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_io(exc, path)
        raise


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files that writers of ``path`` killed mid-write left behind.

    A temp file carries its writer's pid; one whose writer is gone can never be renamed
    into place, so it is only clutter that a user might mistake for data.
    """
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def check_writable_folder(folder: Path | str, what: str) -> None:
    """Check, *before* long work whose output goes to ``folder``, that it can be made and
    written (a read-only ``--out`` found only at the end would lose the work); creates
    nothing. One line naming the folder if not."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DistillError(f"{what} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):  # also false on a read-only mount
        raise DistillError(f"{what} cannot be written: {existing} is read-only here")


def process_alive(pid: int) -> bool:
    """Is a process of this host alive (one we may not signal counts as alive)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: Path | str, value: BaseModel | dict | list) -> None:
    """Write a manifest or small JSON file atomically (see ``write_bytes_atomic``)."""
    if isinstance(value, BaseModel):
        text = value.model_dump_json(indent=2)
    else:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def read_json_model(path: Path | str, model: type[M]) -> M:
    """Load a manifest-like JSON file with a clear error on any problem."""
    path = Path(path)
    text = read_text(path)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise InputError.from_validation(exc, file=path, line=None) from None
