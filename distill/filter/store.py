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
    STORE/images/<a>/<sha256><ext>                  every image the versions name (hard links,
                                                    or copies across file systems); a
                                                    manifest's image_root is "../../images"
    STORE/cache/scored/<key>/                       scores per input shard (reused by any
                                                    policy: a new policy never re-scores)
    STORE/tmp/                                      work in progress, removed by the next run

A version appears only by renaming a finished folder into ``versions/``; its name is
the hash of what it holds (``version_id``), so the same filter over the same input
publishes the same version, and a version folder never changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath

from distill.core.errors import DistillError, InputError
from distill.core.images import ImageError, resolve_image_path
from distill.core.locks import Holder, lock_path_for, single_writer
from distill.core.shards import count_lines, fsync_dir, link_or_copy, read_json_model
from distill.schemas import (
    DatasetManifest,
    ImageRef,
    ShardRef,
    content_hash,
    file_sha256,
    sha256_hex,
)
from distill.schemas.dataset_manifest import eval_set_hash

IMAGE_ROOT_FROM_VERSION = "../../images"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


def version_id(*, parent: str | None, inputs: list[ShardRef], policy_hash: str,
               scorer_versions: dict[str, str], eval_sets: list[str], shards: list[ShardRef],
               scored_shards: list[ShardRef]) -> str:
    """A version's name: the hash of everything that decides its content (not its time,
    nor where its inputs lie on disk)."""
    return content_hash({
        "parent": parent,
        "inputs": [ref.model_dump(mode="json") for ref in inputs],
        "policy": policy_hash,
        "scorers": scorer_versions,
        "eval_sets": sorted(eval_set_hash(label) for label in eval_sets),
        "shards": [ref.model_dump(mode="json") for ref in shards],
        "scored_shards": [ref.model_dump(mode="json") for ref in scored_shards],
    })


class DatasetStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.images_dir = self.root / "images"
        self.cache_dir = self.root / "cache" / "scored"
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

    def new_tmp(self, name: str) -> Path:
        path = self.tmp_dir / f"{name}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # --- versions ----------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    def manifest(self, version: str) -> DatasetManifest:
        return read_json_model(self.version_dir(version) / "manifest.json", DatasetManifest)

    def list_versions(self) -> list[DatasetManifest]:
        """Every published version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        manifests = [read_json_model(path / "manifest.json", DatasetManifest)
                     for path in self.versions_dir.iterdir()
                     if _HEX64.match(path.name) and (path / "manifest.json").is_file()]
        return sorted(manifests, key=lambda m: (m.created_at, m.version))

    def resolve(self, ref: str) -> str:
        """A version id from 'latest', a full id, or a unique prefix of one."""
        if ref == "latest":
            versions = self.list_versions()
            if not versions:
                raise DistillError(f"{self.root} has no dataset versions yet")
            return versions[-1].version
        ref = ref.lower()
        if _HEX64.match(ref) and (self.version_dir(ref) / "manifest.json").is_file():
            return ref
        matches = [m.version for m in self.list_versions() if m.version.startswith(ref)]
        if len(matches) == 1 and len(ref) >= 4:
            return matches[0]
        if not matches:
            raise DistillError(f"no dataset version {ref!r} in {self.root} ('distill datasets "
                               f"--store {self.root} list' shows them)")
        raise DistillError(f"{ref!r} is ambiguous: {', '.join(v[:12] for v in matches)}")

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
        return the ref a version records, plus the pool folder touched (to fsync)."""
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
        data = source.read_bytes()
        if sha256_hex(data) != ref.sha256:
            raise ImageError(f"image bytes changed since ingestion (sha256 mismatch for "
                             f"{ref.path})", field="image.sha256", reason="image_changed")
        link_or_copy(source, target)  # no copy when the ingest folder is on the same disk
        return pooled, target.parent


def verify_version(store: DatasetStore, version: str) -> list[str]:
    """Problems with a published version (empty when every file matches its manifest)."""
    problems = []
    folder = store.version_dir(version)
    try:
        manifest = store.manifest(version)
    except InputError as exc:
        return [str(exc)]
    if manifest.version != version:
        problems.append(f"manifest names version {manifest.version}, folder is {version}")
    for ref in [*manifest.shards, *manifest.scored_shards]:
        path = folder / ref.name
        if not path.is_file():
            problems.append(f"{ref.name}: missing")
        elif file_sha256(path) != ref.sha256:
            problems.append(f"{ref.name}: sha256 differs from the manifest")
    expected = version_id(parent=manifest.parent, inputs=manifest.inputs,
                          policy_hash=manifest.policy_hash,
                          scorer_versions=manifest.scorer_versions,
                          eval_sets=manifest.eval_sets, shards=manifest.shards,
                          scored_shards=manifest.scored_shards)
    if expected != version:
        problems.append(f"content hashes to {expected}, not to its name {version}")
    if content_hash(manifest.policy) != manifest.policy_hash:
        problems.append("policy does not match policy_hash")
    return problems


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
