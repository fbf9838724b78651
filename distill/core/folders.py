"""Output folders: whose they are, and replacing one so that a kill loses nothing.

Whose: a stage writes only into a folder that is its own. ``claim_output`` refuses an OUT
that is one of the run's own inputs (or holds one, or lies inside a toolkit folder it
reads), or that another stage wrote (its ``manifest.json`` says so), and follows a
symbolic link to the folder it names, so a link is never swapped for a folder.
``check_replaceable`` is ``--overwrite``'s rule: a folder is replaced only when the stage
itself wrote everything in it; anything else (a user's notes, the run's own input file) is
named and nothing is deleted.

Replacing:

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
from collections.abc import Callable, Sequence
from pathlib import Path

from distill.core.errors import DistillError, InputError
from distill.core.shards import fsync_dir, process_alive
from distill.core.text import parse_json

log = logging.getLogger(__name__)

STAGING = "staging"
OLD = "old"
_LEGACY_STAGING = ("ingest",)  # ``.OUT.ingest-PID``: the staging name before this module


SHOWN_ENTRIES = 5  # foreign entries an error names before it counts the rest
STORE_MARKER = ".distill-store"  # written into a dataset store's folder when first used


def claim_output(out: Path, stage: str, *, inputs: Sequence[Path] = (),
                 input_folders: Sequence[Path] = (), option: str = "--out") -> Path:
    """OUT as the folder ``stage`` will write, resolved (a symlink is followed, so the
    folder it points at is written and the link stays a link), after refusing an OUT
    that would destroy or mix with what the run reads, or that another stage wrote.

    ``inputs`` are files and folders the run reads (a source file, an image root): none
    may be OUT or lie inside it. ``input_folders`` are toolkit folders the run reads
    (``--samples``, ``--traces``): OUT may not be one or hold one, nor lie inside one
    that a stage wrote. ``option`` is how the user gave OUT (named in errors)."""
    resolved = out.resolve()
    if resolved.exists() and not resolved.is_dir():
        raise DistillError(f"{option} {out} is a file; it must be a folder (or not exist yet)")
    for path in inputs:
        source = path.resolve()
        if source == resolved or resolved in source.parents:
            raise DistillError(f"{option} {out} holds this run's own input {path}: the "
                               f"{stage} output would replace or mix with what it reads; "
                               f"choose another {option}")
    for folder in input_folders:
        source = folder.resolve()
        inside = source in resolved.parents and output_kind(source) is not None
        if source == resolved or resolved in source.parents or inside:
            raise DistillError(f"{option} {out} is, holds or lies inside the input folder "
                               f"{folder}: one stage's output is never another stage's "
                               f"folder; choose another {option}")
    kind = output_kind(resolved)
    if kind is not None and kind != stage:
        raise DistillError(f"{option} {out} holds the output of {kind}, not of {stage} "
                           f"({resolved / 'manifest.json'}); choose another {option}")
    return resolved


def output_kind(folder: Path) -> str | None:
    """Which stage wrote ``folder``, by its ``manifest.json``: a stage manifest's
    ``stage``, ``train`` for a run folder, or a description of a manifest that cannot be
    read; None when there is no manifest (a user's folder, or a new one)."""
    manifest = folder / "manifest.json"
    if not manifest.exists() and not manifest.is_symlink():
        is_store = (folder / "versions").is_dir() or (folder / STORE_MARKER).is_file()
        return "filter" if is_store else None
    try:
        data = parse_json(manifest.read_bytes(), file=manifest)
    except (OSError, InputError):
        return "something else (its manifest.json cannot be read)"
    if isinstance(data, dict) and "run_id" in data:  # a RunManifest (its stage: 1, 2, ...)
        return "train"
    if isinstance(data, dict) and isinstance(data.get("stage"), str):
        return data["stage"]
    return "something else (its manifest.json is not a stage manifest)"


def check_replaceable(out: Path, stage: str, owned: Callable[[str], bool]) -> None:
    """Refuse to replace ``out`` unless every file in it is one ``stage`` wrote.

    ``owned(name)`` answers for one file, named relative to OUT with ``/``; a symbolic
    link or anything that is not a plain file is never the stage's. The error names what
    was found (the first few entries and how many in all), and nothing is deleted."""
    foreign: list[str] = []
    for root, dirs, files in os.walk(out):
        here = Path(root)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                foreign.append((here / name).relative_to(out).as_posix() + "/")
                dirs.remove(name)
        for name in sorted(files):
            path = here / name
            relative = path.relative_to(out).as_posix()
            if path.is_symlink() or not path.is_file() or not owned(relative):
                foreign.append(relative)
    if foreign:
        shown = ", ".join(foreign[:SHOWN_ENTRIES])
        more = f" and {len(foreign) - SHOWN_ENTRIES} more" if len(foreign) > SHOWN_ENTRIES \
            else ""
        raise DistillError(f"--overwrite replaces only a folder that distill {stage} wrote, "
                           f"and {out} holds {len(foreign)} file(s) it did not write: "
                           f"{shown}{more}; nothing was deleted (move them, or choose "
                           "another --out)")


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
