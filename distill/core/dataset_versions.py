"""A published dataset version, checked before anything reads it.

A version is input like any other file the toolkit reads back. Its name is the hash of
what it holds (``DatasetManifest.content_version``), its manifest records the sha256 of
every shard, and the images its records name lie in a pool beside it (the manifest's
``image_root``), each named by its own sha256. So whoever reads a version (export, diff,
train, lineage, ``distill datasets verify``) checks, before it uses anything:

1. the manifest parses, names the folder it lies in, and hashes to that name (and its
   policy to its policy hash): a shard edited after publishing whose new sha256 was written
   into the manifest no longer hashes to the name it was published under;
2. every shard it will read has the sha256 its manifest records;
3. every pooled image those shards name is there and hashes to its sha256.

Cost and the stamp: re-hashing is cheap beside parsing (sha256 runs at ~1 GB/s, JSON
parsing at a tenth of that; bench/store_verify.py measures both), but a big version's
images add up. A successful check can leave a *stamp* (``STAMPS/<version>.<scope>.json``):
the list of pooled images the shards name and one digest over every checked file's
(device, inode, size, mtime, ctime). The next check stats the files instead of reading them when
the digest is unchanged. Any write to a file changes its ctime, which no user call can set
back (``touch -r`` restores the mtime only), and a copy put in its place is another inode;
so the stamp is safe against every edit made through the file system. It does not see bits
rotting on the disk or a writer who forges stamps: ``distill datasets verify`` never uses
it and reads everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.errors import DistillError, InputError
from distill.core.images import ImageError, resolve_image_path
from distill.core.shards import read_json_model, write_json_atomic
from distill.core.text import parse_json, read_text
from distill.schemas import DatasetManifest, ShardRef, content_hash, file_sha256

MAX_LISTED = 5  # problems named in a one-line error; the rest are counted
STAMP_FORMAT = 1


@dataclass
class VersionCheck:
    """What checking a version found (``problems`` empty: it is whole)."""

    folder: Path
    manifest: DatasetManifest | None
    problems: list[str] = field(default_factory=list)
    files: int = 0  # shards and images checked
    hashed_bytes: int = 0  # bytes read and hashed (0 when a stamp vouched for them)
    stamped: bool = False  # the files were vouched for by an unchanged stamp

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """The problems on one line, the first few named."""
        shown = "; ".join(self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        return shown + (f"; and {more} more" if more > 0 else "")


def check_version(folder: Path | str, *, everything: bool = False, images: bool = True,
                  stamps: Path | None = None) -> VersionCheck:
    """Check a version folder (see the module docstring). ``everything``: also the scored
    shards, the dedup index and the images of dropped traces (what ``datasets verify``
    checks); otherwise the data shards and the images of kept traces (what a reader of the
    kept traces uses). ``images``: check the pooled images too (a reader that never opens
    them, like ``datasets diff``, need not). ``stamps``: a folder to read and leave stamps
    in (None: none)."""
    folder = Path(folder)
    try:
        manifest = read_json_model(folder / "manifest.json", DatasetManifest)
    except DistillError as exc:
        return VersionCheck(folder, None, [str(exc)])
    check = VersionCheck(folder, manifest, identity_problems(manifest, folder))
    refs = _shard_refs(folder, manifest, everything, check)
    image_root = _image_root(folder, manifest)
    scope = ("all" if everything else "kept") + ("" if images else "-noimages")
    stamp_path = stamps / f"{manifest.version}.{scope}.json" if stamps is not None else None
    stamp = _read_stamp(stamp_path)
    if stamp is not None and not check.problems:
        paths = [folder / "manifest.json", *(folder / ref.name for ref in refs),
                 *(image_root / name for name in stamp["images"] if image_root)]
        if _stat_digest(paths) == stamp["stat"]:
            check.files, check.stamped = len(paths) - 1, True
            return check
    for ref in refs:
        _check_shard(folder, ref, check)
    pooled = _check_images(folder, manifest, refs, image_root, check) \
        if images and not check.problems else []
    if check.ok and stamp_path is not None:
        paths = [folder / "manifest.json", *(folder / ref.name for ref in refs),
                 *(image_root / name for name in pooled if image_root)]
        _write_stamp(stamp_path, pooled, _stat_digest(paths))
    return check


def open_version(folder: Path | str, *, everything: bool = False, images: bool = True,
                 stamps: Path | None = None) -> DatasetManifest:
    """The manifest of a version that checks out; else one line naming what is wrong."""
    check = check_version(folder, everything=everything, images=images, stamps=stamps)
    if check.manifest is None or check.problems:
        raise InputError(f"dataset version {Path(folder).name[:16]} is damaged: "
                         f"{check.summary()} ('distill datasets verify' lists every problem; "
                         "publish it again from its traces)", file=Path(folder) / "manifest.json",
                         reason="damaged_version")
    return check.manifest


def identity_problems(manifest: DatasetManifest, folder: Path | None) -> list[str]:
    """Does the manifest hash to its name, and is that the folder's name?"""
    problems = []
    if folder is not None and _is_version_name(folder.name) and manifest.version != folder.name:
        problems.append(f"manifest names version {manifest.version[:16]}, its folder is "
                        f"{folder.name[:16]}")
    kept = sum(ref.rows for ref in manifest.shards)
    if manifest.counts.get("kept", kept) != kept:
        problems.append(f"its counts say {manifest.counts['kept']:,} kept traces, its data "
                        f"shards hold {kept:,}")
    content = manifest.content_version()
    if content != manifest.version:
        problems.append(f"its content hashes to {content[:16]}, not to its name "
                        f"{manifest.version[:16]} (a shard or the manifest was edited after "
                        "publishing)")
    if content_hash(manifest.policy) != manifest.policy_hash:
        problems.append("its policy does not match policy_hash")
    return problems


def _is_version_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _shard_refs(folder: Path, manifest: DatasetManifest, everything: bool,
                check: VersionCheck) -> list[ShardRef]:
    refs = list(manifest.shards)
    if everything:
        refs += manifest.scored_shards
        refs += _index_refs(folder, check)
    return refs


def _index_refs(folder: Path, check: VersionCheck) -> list[ShardRef]:
    """The dedup index parts a child version dedups against (index/index.json)."""
    path = folder / "index" / "index.json"
    if not path.is_file():
        return []
    try:
        parts = parse_json(read_text(path), file=path)["parts"]
        return [ShardRef.model_validate({**part, "name": f"index/{part['name']}"})
                for part in parts]
    except DistillError as exc:
        check.problems.append(f"index/index.json: {exc}")
    except (ValueError, KeyError, TypeError) as exc:
        check.problems.append(f"index/index.json: not the index a version writes ({exc})")
    return []


def _image_root(folder: Path, manifest: DatasetManifest) -> Path | None:
    if manifest.image_root is None:
        return None
    root = Path(manifest.image_root)
    return root if root.is_absolute() else folder / root


def _check_shard(folder: Path, ref: ShardRef, check: VersionCheck) -> None:
    path = folder / ref.name
    check.files += 1
    try:
        digest = file_sha256(path)
    except FileNotFoundError:
        check.problems.append(f"{ref.name}: missing")
        return
    except OSError as exc:
        check.problems.append(f"{ref.name}: unreadable ({exc.strerror})")
        return
    check.hashed_bytes += path.stat().st_size
    if digest != ref.sha256:
        check.problems.append(f"{ref.name}: changed since it was published (sha256 differs "
                              "from the manifest)")


def _check_images(folder: Path, manifest: DatasetManifest, refs: list[ShardRef],
                  image_root: Path | None, check: VersionCheck) -> list[str]:
    """Every pooled image the (already verified) record shards name; returns their paths
    relative to the pool."""
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.name.startswith("index/"):
            continue
        for path, sha256 in _image_refs(folder / ref.name):
            seen.setdefault(path, sha256)
    if seen and image_root is None:
        check.problems.append("records name pooled images but the manifest has no image_root")
        return []
    for relative, sha256 in sorted(seen.items()):
        check.files += 1
        try:
            path = resolve_image_path(image_root, relative)  # type: ignore[arg-type]
            digest = file_sha256(path)
        except ImageError as exc:
            check.problems.append(f"image {relative}: {exc.message}")
            continue
        except OSError as exc:
            check.problems.append(f"image {relative}: unreadable ({exc.strerror})")
            continue
        check.hashed_bytes += path.stat().st_size
        if digest != sha256:
            check.problems.append(f"image {relative}: its bytes changed after publishing "
                                  "(sha256 mismatch)")
    return sorted(seen)


# The sample's image as a version's records hold it (the sample is a record's first field, so
# this is the line's first match; a quote inside a JSON string is escaped, so no text can
# fake it). Parsing the whole line (json.loads) cost 5 times the hashing it serves.
_IMAGE = re.compile(r'"image":\{"path":(null|"(?:[^"\\]|\\.)*"),"data":(?:null|"[^"]*"),'
                    r'"sha256":"([0-9a-f]{64})"\}')


def _image_refs(shard: Path) -> Iterator[tuple[str, str]]:
    """(path, sha256) of the image of every record in a shard (inline images are inside
    the shard, covered by its own hash). The shard's hash was checked first: these are
    records this toolkit wrote."""
    with open(shard, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            match = _IMAGE.search(line)
            if match is None:
                path, sha256 = _parsed_image(line, shard, number)
            else:
                path = None if match[1] == "null" else json.loads(match[1])
                sha256 = match[2]
            if path is not None:
                yield str(path), str(sha256)


def _parsed_image(line: str, shard: Path, number: int) -> tuple[str | None, str]:
    """The slow way, for a record written in another key order."""
    try:
        image = json.loads(line)["sample"]["image"]
        return image["path"], image["sha256"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise InputError("not a record of a dataset version", file=shard, line=number,
                         reason="bad_record") from None


# --- stamps ------------------------------------------------------------------------------------


def _stat_digest(paths: list[Path]) -> str | None:
    """One digest over (path, device, inode, size, mtime, ctime) of every file; None if
    one of them cannot be stat'ed."""
    rows = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            return None
        rows.append([str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns,
                     info.st_ctime_ns])
    return content_hash(rows)


def _read_stamp(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
        if stamp["format"] != STAMP_FORMAT or not isinstance(stamp["stat"], str) \
                or not all(isinstance(name, str) for name in stamp["images"]):
            return None
        return stamp
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None  # a stamp only saves work: a bad one is ignored, never trusted


def _write_stamp(path: Path, images: list[str], digest: str | None) -> None:
    if digest is None:
        return
    # A read-only or full store keeps no stamp: the next reader checks again.
    with contextlib.suppress(OSError, DistillError):
        write_json_atomic(path, {"format": STAMP_FORMAT, "images": images, "stat": digest})
