"""Eval sets: the Samples a model is scored on (eval) and kept out of training (filter).

An eval set is named by a *spec*: ``DIR`` or ``DIR:SPLIT`` for an ingest folder
(``manifest.json`` + ``samples/<split>/*.jsonl``; split ``test`` by default), or a path to a
JSONL file of Sample records (image paths relative to the file's folder). The spec, made
absolute, is what an EvalResult stores in ``eval_set``, so compare and lineage can find the
same items (and their images) again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from distill.core.errors import InputError
from distill.core.shards import iter_lines, parse_line, read_json_model
from distill.schemas import Sample, StageManifest, content_hash, file_sha256

DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class EvalSet:
    """Samples in a fixed order, where their images live, and the spec that names them."""

    spec: str
    name: str
    samples: tuple[Sample, ...]
    image_root: Path | None

    @cached_property
    def hash(self) -> str:
        """Content hash of the items (what is asked, the image bytes, the gold answer and
        the category), independent of file layout and order."""
        return content_hash(sorted(
            [sample.id, sample.content_hash(), sample.category] for sample in self.samples
        ))

    @cached_property
    def by_id(self) -> dict[str, Sample]:
        return {sample.id: sample for sample in self.samples}


def require_gold(eval_set: EvalSet) -> None:
    """Eval scores against gold answers only: refuse a set whose items lack them (an
    unlabeled pool is training material; its derived labels are never a yardstick)."""
    missing = [sample.id for sample in eval_set.samples if sample.answer is None]
    if missing:
        raise InputError(f"{len(missing)} of {len(eval_set.samples)} eval items have no gold "
                         f"answer (first: {missing[0]!r}); an eval set needs gold answers for "
                         "every item (ingest it without --withhold-gold)", file=eval_set.spec,
                         field="answer", reason="no_gold")


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``DIR:SPLIT`` -> (DIR, SPLIT); a path that exists as written is taken whole."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, None
    head, sep, split = spec.rpartition(":")
    if sep and head and split and "/" not in split and Path(head).expanduser().exists():
        return Path(head).expanduser(), split
    raise InputError("eval set not found (expected an ingest folder, DIR:SPLIT, or a JSONL "
                     "file of Samples)", file=spec, reason="missing_file")


def load_eval_set(spec: str | Path, *, split: str | None = None,
                  image_root: Path | None = None, verify: bool = True) -> EvalSet:
    """Load and validate an eval set; every error names the file, line and field."""
    path, spec_split = split_spec(str(spec))
    path = path.resolve()
    if path.is_dir():
        chosen = split or spec_split or DEFAULT_SPLIT
        samples, root = _from_ingest_dir(path, chosen, verify=verify)
        if image_root is not None:
            root = image_root.resolve()
        return EvalSet(spec=f"{path}:{chosen}", name=f"{path.name}:{chosen}",
                       samples=samples, image_root=root)
    if split or spec_split:
        raise InputError("a split can only be chosen for an ingest folder, not a JSONL file",
                         file=path, reason="config_error")
    samples = _read_samples([path])
    if not samples:
        raise InputError("the eval set file holds no samples", file=path, reason="empty")
    root = (image_root or path.parent).resolve()
    return EvalSet(spec=str(path), name=path.stem, samples=samples, image_root=root)


def _from_ingest_dir(folder: Path, split: str, *, verify: bool) -> tuple[tuple[Sample, ...],
                                                                          Path]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError("not an ingest folder: it has no manifest.json", file=folder,
                         reason="missing_file")
    manifest = read_json_model(manifest_path, StageManifest)
    if manifest.stage != "ingest":
        raise InputError(f"this is a '{manifest.stage}' stage folder; an eval set is an "
                         "ingest folder", file=manifest_path, field="stage",
                         reason="config_error")
    samples = [ref for ref in manifest.shards if ref.in_folder("samples")]
    shards = [ref for ref in samples if ref.split == split]
    if not shards:
        splits = sorted({ref.split for ref in samples})
        raise InputError(f"no split {split!r} in this eval set; splits: {splits}",
                         file=manifest_path, reason="config_error")
    for ref in shards:
        shard = folder / ref.name
        if not shard.is_file():
            raise InputError("shard listed in the manifest is missing", file=shard,
                             reason="missing_file")
        if verify and file_sha256(shard) != ref.sha256:
            raise InputError("shard changed since ingestion (sha256 differs from the "
                             "manifest)", file=shard, reason="hash_mismatch")
    samples = _read_samples([folder / ref.name for ref in shards])
    root = Path(manifest.image_root or ".")
    return samples, (root if root.is_absolute() else folder / root).resolve()


def _read_samples(files: list[Path]) -> tuple[Sample, ...]:
    """Every Sample of the files, in order; a repeated id is an error at its line."""
    seen: dict[str, str] = {}
    samples = []
    for file in files:
        for number, line in iter_lines(file):
            sample = parse_line(line, Sample, file=file, line=number)
            if sample.id in seen:
                raise InputError(f"duplicate sample id {sample.id!r} (first at "
                                 f"{seen[sample.id]})", file=file, line=number, field="id",
                                 reason="duplicate_id")
            seen[sample.id] = f"{file}:{number}"
            samples.append(sample)
    return tuple(samples)
