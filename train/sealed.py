"""A folder that proves itself: the size and hash of each of its files, recorded when it
was written, checked before it is read back.

A checkpoint is read back hours or weeks after it was written, often after a copy between
machines, and what it holds decides every later step of a run. A file cut short by a copy,
one flipped bit, or another checkpoint's file copied in must stop a resume, naming the
file, rather than train on. The record (``checkpoint.json`` in a checkpoint) is written
last, into the hidden temp folder, before the folder is renamed into place; so a folder
under its final name whose files match its record is exactly what its writer wrote.

The hash is XXH3-128, not sha256: the record proves the files are what their writer
wrote (a copy cut short, one flipped bit, another checkpoint's file), not who wrote them
-- it is not signed, so whoever can change a file can rewrite its record, and a
cryptographic hash would buy nothing. XXH3 hashes at memory speed, ~10x sha256 on this
box, so proving a checkpoint costs a read of its files from the page cache on save and
one read on resume; big folders' files are hashed on threads at once.
bench/checkpoint_verify.py measures it (bench/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from distill.core.errors import DistillError
from distill.core.text import parse_json

HASH = "xxh3_128"
HEX = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1 << 22
THREADS_FROM_BYTES = 64 << 20


class FolderDamagedError(DistillError):
    """A sealed folder's file is missing, or not what was written; names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def file_digest(path: Path) -> str:
    """The file's XXH3-128, read in chunks into one buffer (no copy per chunk)."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def digests(paths: list[Path]) -> list[str]:
    """The hash of each file; big folders' files on threads at once (starting threads
    costs more than hashing a few MB)."""
    if len(paths) < 2 or sum(path.stat().st_size for path in paths) < THREADS_FROM_BYTES:
        return [file_digest(path) for path in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(file_digest, paths))


def seal(folder: Path, record_name: str, fields: dict[str, Any]) -> Path:
    """Write ``folder/record_name``: ``fields`` plus every file's size and hash (the
    folder's files are complete; the caller fsyncs the folder afterwards)."""
    paths = [path for path in sorted(folder.iterdir()) if path.is_file()
             and path.name != record_name]
    files = {path.name: {"bytes": path.stat().st_size, HASH: digest}
             for path, digest in zip(paths, digests(paths), strict=True)}
    record = folder / record_name
    record.write_text(json.dumps({**fields, "files": files}, indent=2, sort_keys=True) + "\n",
                      encoding="utf-8")
    return record


def read_seal(folder: Path, record_name: str, required: list[str], *,
              hash_files: bool = True) -> dict[str, Any]:
    """The record of ``folder`` once every file it lists (and every ``required`` one) is
    there, a plain file of the recorded size and hash (sizes only without
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
        if digest != entry[HASH]:
            raise FolderDamagedError(folder / name, "does not match the hash recorded when "
                                                    "it was written (changed on disk: a "
                                                    "flipped bit, or another checkpoint's "
                                                    "file copied in)")
    return record


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FolderDamagedError(path, "is missing, so the files beside it cannot be checked "
                                       "(a half-copied folder, or a checkpoint written "
                                       "before checkpoints recorded their files' hashes: "
                                       "to vouch for such a run's checkpoints as they are, "
                                       "resume with --adopt-old-checkpoints)") from None
    except OSError as exc:
        raise FolderDamagedError(path, f"cannot be read: {exc.strerror}") from None
    try:
        record = parse_json(data, file=path)
    except DistillError as exc:
        raise FolderDamagedError(path, f"is not a readable record ({exc})") from None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not all(_valid_entry(n, e) for n, e in files.items()):
        raise FolderDamagedError(path, "is not a record of files (expected an object whose "
                                       f"'files' maps names to their bytes and {HASH})")
    return record


def _valid_entry(name: Any, entry: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name and isinstance(entry, dict)
            and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
            and entry["bytes"] >= 0 and isinstance(entry.get(HASH), str)
            and HEX.match(entry[HASH]) is not None)


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
