"""Are two stage folders the same output? For refactors that must not change what generate
and judge write (issue 25).

Every file under BEFORE and AFTER (image folders aside) is compared byte for byte after
blanking the wall-clock fields: ``latency_s`` (Trace, Judgement), ``created_at``
(manifests) and the manifests' shard sha256s (they cover ``latency_s``). Run the same
commands before and after the change, into the same paths (rejections and manifests name
them), then:

    python bench/same_outputs.py BEFORE AFTER

Last line: files compared, how many are equal as written and after blanking, a digest of
the blanked contents. Exit status 1 when any file differs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

TIMING = ("latency_s", "created_at")


def _blank_line(line: bytes) -> bytes:
    if not line.strip():
        return line
    record = json.loads(line)
    if not any(name in record for name in TIMING):
        return line
    for name in TIMING:
        if name in record:
            record[name] = None
    return json.dumps(record).encode()


def _blank_manifest(data: bytes) -> bytes:
    manifest = json.loads(data)
    manifest["created_at"] = None
    for group in ("shards", "rejects", "inputs"):
        for ref in manifest.get(group) or []:
            ref["sha256"] = None
    return json.dumps(manifest).encode()


def blanked(path: Path) -> bytes:
    """The file's bytes with its wall-clock fields blanked."""
    data = path.read_bytes()
    if path.name == "manifest.json":
        return _blank_manifest(data)
    if path.suffix == ".json":
        return _blank_line(data)
    if path.suffix == ".jsonl":
        return b"\n".join(_blank_line(line) for line in data.split(b"\n"))
    return data


def files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*")
                  if path.is_file() and "images" not in path.parts)


def main(before: Path, after: Path) -> int:
    names = files(before)
    if names != files(after):
        print("the folders hold different files:", sorted(set(names) ^ set(files(after))))
        return 1
    as_written = differ = 0
    for name in names:
        as_written += (before / name).read_bytes() == (after / name).read_bytes()
        if blanked(before / name) != blanked(after / name):
            differ += 1
            print("DIFF", name)
    digest = hashlib.sha256(b"".join(blanked(before / name) for name in names)).hexdigest()
    print(f"{len(names)} files, {as_written} byte-identical as written, "
          f"{len(names) - differ} identical without latency_s/created_at, {differ} differ; "
          f"digest {digest[:16]}")
    return int(bool(differ))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
