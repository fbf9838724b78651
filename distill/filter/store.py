"""The dataset store: immutable, content-addressed dataset versions and what they share.

Layout::

    STORE/versions/<version>/manifest.json          DatasetManifest
    STORE/versions/<version>/data/part-NNNNN.jsonl  kept ScoredTrace records (self-contained)
    STORE/versions/<version>/scored/<split>/part-NNNNN.jsonl
                                                    every input trace, kept or dropped, with
                                                    all its signals, verdict and reasons
    STORE/versions/<version>/index/                 dedup keys of the kept traces, so a child
                                                    version dedups against this one
    STORE/versions/<version>/dedup/clusters.jsonl   every duplicate and the trace it repeats
    STORE/versions/<version>/rejects.jsonl          input lines that could not be scored
    STORE/versions/<version>/report/                report.md, stats.json, PNG plots
    STORE/images/<a>/<sha256><ext>                  every image the versions name: copies
                                                    (reflinks where the file system shares
                                                    blocks copy-on-write), read-only, never
                                                    hard links into an input folder; a
                                                    manifest's image_root is "../../images"
    STORE/cache/scored/<key>/                       scores per input shard (reused by any
                                                    policy: a new policy never re-scores)
    STORE/cache/verified/<version>.<scope>.json     stamps of versions found whole (see
                                                    distill.core.dataset_versions)
    STORE/tmp/                                      work in progress, removed by the next run

A version appears only by renaming a finished folder into ``versions/``; its name is
the hash of what it holds (``DatasetManifest.content_version``), so the same filter over the
same input publishes the same version, and a version folder never changes. Every reader
checks that before it reads (``open``): the name, the shards and the pooled images. One
damaged version never hides the others: listing and resolving go by folder names, and a
manifest that cannot be read only marks its own version damaged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath

from distill.core.dataset_versions import check_version, open_version
from distill.core.errors import DistillError
from distill.core.images import ImageError, resolve_image_path
from distill.core.locks import Holder, lock_path_for, single_writer
from distill.core.shards import copy_immutable, count_lines, fsync_dir, read_json_model
from distill.schemas import DatasetManifest, ImageRef, file_sha256

IMAGE_ROOT_FROM_VERSION = "../../images"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
MIN_PREFIX = 4  # git's shortest abbreviation of an object name
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


class DatasetStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.images_dir = self.root / "images"
        self.cache_dir = self.root / "cache" / "scored"
        self.stamps_dir = self.root / "cache" / "verified"
        self.tmp_dir = self.root / "tmp"

    # --- locking and leftovers -------------------------------------------------------

    def lock(self, *, wait: bool = False) -> AbstractContextManager[Holder]:
        """One writer per store (the core's single-writer guard on STORE/.lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return single_writer(lock_path_for(self.root), f"dataset store {self.root}", wait=wait)

    def clean_leftovers(self) -> int:
        """Remove work in progress of runs that died (call with the lock held)."""
        removed = 0
        for folder in (self.tmp_dir, self.cache_dir, self.versions_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if folder == self.tmp_dir or entry.name.startswith(".tmp-"):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        for path in self.images_dir.glob("*/.*.tmp-*") if self.images_dir.is_dir() else ():
            path.unlink(missing_ok=True)
        return removed

    def break_pool_links(self) -> int:
        """Replace every pooled image that is a hard link (stores written before the pool
        held copies linked the ingest folder's files) by a read-only copy of itself, so an
        edit in the input folder no longer reaches published versions; call with the lock
        held. Returns how many were mended. A linked image whose bytes no longer match its
        name is left for ``datasets verify`` to name: copying it would bless the edit."""
        mended = 0
        for path in self.images_dir.glob("*/*") if self.images_dir.is_dir() else ():
            if path.name.startswith(".") or path.stat().st_nlink < 2:
                continue
            if file_sha256(path) == path.name.split(".")[0]:
                copy_immutable(path, path)
                mended += 1
        if mended:
            for folder in {p.parent for p in self.images_dir.glob("*/*")}:
                fsync_dir(folder)
        return mended

    def new_tmp(self, name: str) -> Path:
        path = self.tmp_dir / f"{name}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # --- versions ----------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    def manifest(self, version: str) -> DatasetManifest:
        """A version's manifest as written (``open`` checks the version first)."""
        return read_json_model(self.version_dir(version) / "manifest.json", DatasetManifest)

    def open(self, ref: str, *, everything: bool = False,
             images: bool = True) -> tuple[str, DatasetManifest]:
        """(id, manifest) of the version ``ref`` names, once its name, its data shards and
        the pooled images its kept traces name are checked (``everything``: its scored
        shards and dedup index too; ``images=False``: not the images); one line naming the
        damage if not."""
        version = self.resolve(ref)
        return version, open_version(self.version_dir(version), everything=everything,
                                     images=images, stamps=self.stamps_dir)

    def version_names(self) -> list[str]:
        """Every published version's id (its folder name), whatever state it is in."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(path.name for path in self.versions_dir.iterdir()
                      if _HEX64.match(path.name) and path.is_dir())

    def scan(self) -> tuple[list[DatasetManifest], list[tuple[str, str]]]:
        """(readable versions oldest first, [(id, why) of the damaged ones]): a torn or
        foreign manifest marks its own version, never hides the others."""
        manifests, damaged = [], []
        for name in self.version_names():
            try:
                manifest = self.manifest(name)
            except DistillError as exc:
                damaged.append((name, str(exc)))
                continue
            if manifest.version != name:
                damaged.append((name, f"its manifest names version {manifest.version[:16]}"))
                continue
            manifests.append(manifest)
        return sorted(manifests, key=lambda m: (m.created_at, m.version)), damaged

    def list_versions(self) -> list[DatasetManifest]:
        """Every version whose manifest reads, oldest first (``scan`` names the others)."""
        return self.scan()[0]

    def resolve(self, ref: str) -> str:
        """A version id from 'latest', a full id, or a unique prefix of at least
        ``MIN_PREFIX`` hex characters (as git resolves abbreviated object names)."""
        if ref == "latest":
            versions, damaged = self.scan()
            if not versions:
                state = (f"no readable dataset versions ({len(damaged)} damaged: 'distill "
                         "datasets list')") if damaged else "no dataset versions yet"
                raise DistillError(f"{self.root} has {state}")
            return versions[-1].version
        key = ref.strip().lower()
        if not _HEX.match(key):
            raise DistillError(f"{ref!r} is not a version id: give 'latest', an id, or a "
                               f"unique prefix of {MIN_PREFIX} or more of its hex characters")
        if len(key) < MIN_PREFIX:
            raise DistillError(f"{ref!r} is too short to name a version: give at least "
                               f"{MIN_PREFIX} hex characters (as git does)")
        matches = [name for name in self.version_names() if name.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise DistillError(f"no dataset version {ref!r} in {self.root} ('distill datasets "
                               f"--store {self.root} list' shows them)")
        raise DistillError(f"{ref!r} is ambiguous: {len(matches)} versions start with it "
                           f"({', '.join(v[:16] for v in matches[:8])}); give more characters")

    def publish(self, staging: Path, version: str) -> bool:
        """Rename a finished staging folder to ``versions/<version>``; False if that
        version already exists (same content: the staging folder is discarded)."""
        target = self.version_dir(version)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        if (target / "manifest.json").is_file():
            shutil.rmtree(staging)
            return False
        for folder in sorted({p.parent for p in staging.rglob("*")} | {staging}):
            fsync_dir(folder)
        os.rename(staging, target)
        fsync_dir(self.versions_dir)
        return True

    # --- images ------------------------------------------------------------------------

    def add_image(self, ref: ImageRef, root: Path | None) -> tuple[ImageRef, Path | None]:
        """Put a sample's image into the store's pool (checked against its sha256) and
        return the ref a version records, plus the pool folder touched (to fsync).

        The pool holds copies (reflinks where the file system can share blocks
        copy-on-write), read-only: never a hard link, through which an edit of the input
        folder's file would change a published version (``break_pool_links`` mends
        stores written before this rule)."""
        if ref.path is None:
            return ref, None
        suffix = PurePosixPath(ref.path).suffix.lower()
        relative = f"{ref.sha256[:1]}/{ref.sha256}{suffix if _SUFFIX.match(suffix) else ''}"
        target = self.images_dir / relative
        pooled = ImageRef(path=relative, sha256=ref.sha256)
        if target.exists():
            return pooled, None
        if root is None:
            raise ImageError("image is stored by path but no image root is known",
                             field="image.path", reason="missing_image")
        source = resolve_image_path(root, ref.path)  # refuses escapes out of the root

        def unchanged(copy: Path) -> None:
            if file_sha256(copy) != ref.sha256:
                raise ImageError(f"image bytes changed since ingestion (sha256 mismatch for "
                                 f"{ref.path})", field="image.sha256", reason="image_changed")

        copy_immutable(source, target, check=unchanged)
        return pooled, target.parent


def verify_version(store: DatasetStore, version: str) -> list[str]:
    """Problems with a published version: every file it names re-read and re-hashed (its
    manifest and name, data and scored shards, dedup index, and each pooled image its
    records name); empty when it is whole. Never trusts a stamp."""
    return check_version(store.version_dir(version), everything=True).problems


def find_half_written(store: DatasetStore) -> list[str]:
    """Files that look finished but are not (what a crash must never leave behind).

    Work in progress may only live under ``tmp/``, in ``.tmp-*`` folders and files, or in
    ``*.partial`` shards there; every version, cache entry and pooled image under its
    final name must be whole."""
    problems = []
    if store.versions_dir.is_dir():
        for folder in store.versions_dir.iterdir():
            problems += [f"versions/{folder.name}: {p}" for p in
                         verify_version(store, folder.name)]
    if store.cache_dir.is_dir():
        for entry in store.cache_dir.iterdir():
            if entry.name.startswith(".tmp-"):
                continue
            try:
                rows = json.loads((entry / "entry.json").read_text(encoding="utf-8"))["rows"]
                counts = {count_lines(entry / name) for name in ("rows.jsonl", "select.jsonl")}
                if counts != {rows}:
                    problems.append(f"cache entry {entry.name}: row counts differ")
            except (OSError, ValueError, KeyError) as exc:
                problems.append(f"cache entry {entry.name}: {exc}")
    if store.images_dir.is_dir():
        for image in store.images_dir.glob("*/*"):
            if not image.name.startswith(".") and file_sha256(image) != image.name.split(".")[0]:
                problems.append(f"image {image.name}: bytes do not match its name")
    for path in store.root.rglob("*.partial"):
        if store.tmp_dir not in path.parents and ".tmp-" not in path.as_posix():
            problems.append(f"{path.relative_to(store.root)}: a partial shard outside tmp/")
    return problems
