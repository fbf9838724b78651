"""Replacing a whole output folder so that a kill at any moment loses nothing.

A stage that replaces OUT (``ingest --overwrite``, ``eval convert --overwrite``) builds
the new folder in a staging folder beside OUT, then calls ``replace_folder``:

1. rename OUT aside to ``.OUT.old-PID`` (one rename: OUT is whole or absent),
2. rename the staging folder to OUT (OUT is now the new folder, whole),
3. delete the old folder.

Deleting before moving in (what ingest did) left, when killed in between, an OUT half
deleted but still holding its manifest: it looked finished. Here a kill leaves either
the old OUT, or the new OUT, or no OUT and the old one whole under ``.OUT.old-PID``.
``sweep_leftovers`` (called by the next run of the stage, under its lock) puts such an old
folder back and removes staging and old folders whose writer is dead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from distill.core.shards import fsync_dir, process_alive

log = logging.getLogger(__name__)

STAGING = "staging"
OLD = "old"
_LEGACY_STAGING = ("ingest",)  # ``.OUT.ingest-PID``: the staging name before this module


def staging_folder(out: Path) -> Path:
    """A fresh, empty staging folder for a new OUT, beside it (same disk: renames work)."""
    staging = _aside(out, STAGING, os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def replace_folder(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out``; the old ``out`` goes only after."""
    old = _aside(out, OLD, os.getpid())
    if old.exists():
        shutil.rmtree(old)
    if out.exists() or out.is_symlink():
        os.rename(out, old)
    os.rename(staging, out)
    fsync_dir(out.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink(missing_ok=True)


def discard_staging(staging: Path) -> None:
    """Remove a staging folder after a failed run (OUT was never touched)."""
    shutil.rmtree(staging, ignore_errors=True)


def sweep_leftovers(out: Path) -> list[str]:
    """Tidy what killed replacers of ``out`` left beside it; returns what was done.

    A dead writer's staging folder is removed. A dead writer's old folder is put back at
    ``out`` when ``out`` is missing (the kill landed between the two renames), else
    removed (the new ``out`` was already in place). Folders of live writers are left.
    """
    done: list[str] = []
    if not out.parent.is_dir():
        return done
    kinds = "|".join([STAGING, OLD, *_LEGACY_STAGING])
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({kinds})-(\d+)$")
    for entry in sorted(out.parent.iterdir()):
        match = pattern.match(entry.name)
        if match is None:
            continue
        kind, pid = match.group(1), int(match.group(2))
        if pid == os.getpid() or process_alive(pid):
            continue
        if kind == OLD and not out.exists() and not out.is_symlink():
            os.rename(entry, out)
            done.append(f"restored {out} from {entry.name} (a replace was killed)")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry.name} (left by killed pid {pid})")
    for line in done:
        log.warning("%s", line)
    return done


def _aside(out: Path, kind: str, pid: int) -> Path:
    return out.parent / f".{out.name}.{kind}-{pid}"
