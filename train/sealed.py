"""A folder that proves itself: the size and sha256 of each of its files, recorded when it
was written, checked before it is read back.

A checkpoint is read back hours or weeks after it was written, often after a copy between
machines, and what it holds decides every later step of a run. A file cut short by a copy,
one flipped bit, or another checkpoint's file copied in must stop a resume, naming the
file, rather than train on. The record (``checkpoint.json`` in a checkpoint) is written
last, into the hidden temp folder, before the folder is renamed into place; so a folder
under its final name whose files match its record is exactly what its writer wrote.

Hashing costs one read of the files on write (from the page cache, just written) and one
on resume, bound by sha256 itself (~1 GB/s a core with SHA extensions); the files are
hashed on threads at once (hashlib lets go of the GIL), so the weights and the optimizer
state, most of the bytes, take one core each. bench/checkpoint_verify.py measures it
(bench/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distill.core.errors import DistillError
from distill.core.text import parse_json

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
THREADS_FROM_BYTES = 64 << 20


class FolderDamagedError(DistillError):
    """A sealed folder's file is missing, or not what was written; names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests(paths: list[Path]) -> list[str]:
    """The sha256 of each file; big folders' files on threads at once (starting threads
    costs more than hashing a few MB)."""
    if len(paths) < 2 or sum(path.stat().st_size for path in paths) < THREADS_FROM_BYTES:
        return [file_digest(path) for path in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(file_digest, paths))


def seal(folder: Path, record_name: str, fields: dict[str, Any]) -> Path:
    """Write ``folder/record_name``: ``fields`` plus every file's size and sha256 (the
    folder's files are complete; the caller fsyncs the folder afterwards)."""
    paths = [path for path in sorted(folder.iterdir()) if path.is_file()
             and path.name != record_name]
    files = {path.name: {"bytes": path.stat().st_size, "sha256": digest}
             for path, digest in zip(paths, digests(paths), strict=True)}
    record = folder / record_name
    record.write_text(json.dumps({**fields, "files": files}, indent=2, sort_keys=True) + "\n",
                      encoding="utf-8")
    return record


def read_seal(folder: Path, record_name: str, required: list[str], *,
              hash_files: bool = True) -> dict[str, Any]:
    """The record of ``folder`` once every file it lists (and every ``required`` one) is
    there, a plain file of the recorded size and sha256 (sizes only without
    ``hash_files``); otherwise FolderDamagedError."""
    path = folder / record_name
    record = _read_record(path)
    files = record["files"]
    for name in required:
        if name not in files:
            raise FolderDamagedError(path, f"lists no {name}; the checkpoint is incomplete")
    entries = sorted(files.items())
    for name, entry in entries:
        _check_file(folder / name, entry)
    if not hash_files:
        return record
    found = digests([folder / name for name, _ in entries])
    for (name, entry), digest in zip(entries, found, strict=True):
        if digest != entry["sha256"]:
            raise FolderDamagedError(folder / name, "does not match the sha256 recorded when "
                                                    "it was written (changed on disk: a "
                                                    "flipped bit, or another checkpoint's "
                                                    "file copied in)")
    return record


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FolderDamagedError(path, "is missing, so the files beside it cannot be checked "
                                       "(a half-copied folder, or one written before "
                                       "checkpoints recorded their files' hashes)") from None
    except OSError as exc:
        raise FolderDamagedError(path, f"cannot be read: {exc.strerror}") from None
    try:
        record = parse_json(data, file=path)
    except DistillError as exc:
        raise FolderDamagedError(path, f"is not a readable record ({exc})") from None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(_valid_entry(n, e) for n, e in files.items()):
        raise FolderDamagedError(path, "is not a record of files (expected an object whose "
                                       "'files' maps names to their bytes and sha256)")
    return record


def _valid_entry(name: Any, entry: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name and isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
            and entry["bytes"] >= 0 and isinstance(entry.get("sha256"), str)
            and SHA256.match(entry["sha256"]) is not None)


def _check_file(path: Path, entry: dict[str, Any]) -> None:
    """There, a plain file of the recorded size (the cheap checks, before any hashing)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise FolderDamagedError(path, "is missing (it was written with the checkpoint)") \
            from None
    if not stat.S_ISREG(info.st_mode):
        raise FolderDamagedError(path, "is not a plain file (a link or a folder); a "
                                       "checkpoint's files are copied, never linked")
    if info.st_size != entry["bytes"]:
        raise FolderDamagedError(path, f"is {info.st_size:,} bytes, {entry['bytes']:,} when "
                                       f"it was written (cut short or replaced)")
