"""Reading what to train on: a dataset version (ScoredTrace shards) or an ingest folder
(Sample shards, gold answers), as a list of ``TrainItem`` (sample + target text).

Every item says where its label comes from (``label_source``): ``gold`` for an item that
came with a gold answer, ``consensus`` or ``judge`` for a label the filter derived from
the teachers (an unlabeled pool). Target ``gold`` trains on the item's label, which for
such items is the derived one; the training set counts both kinds and says so.

A dataset version is self-contained: each record embeds its sample, and images resolve
through the manifest's ``image_root`` (relative to the manifest's folder). Before training
starts the version is checked as every reader checks it (``distill.core.dataset_versions``):
its manifest must hash to its name, its shards to the manifest, its pooled images to their
sha256. An ingest folder's shards are checked against its manifest.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distill.core.dataset_versions import open_version
from distill.core.errors import DistillError, InputError
from distill.core.prompts import target_text
from distill.core.shards import iter_records, read_json_model
from distill.core.text import parse_json
from distill.schemas import (
    Sample,
    ScoredTrace,
    ShardRef,
    StageManifest,
    file_sha256,
)
from distill.train.siqvl.student_processor import PromptMode

TargetMode = Literal["cot", "answer", "gold"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainItem:
    """One training example before tokenization."""

    sample: Sample
    target: str
    mode: PromptMode
    image_root: Path
    label_source: str = "gold"  # gold | consensus | judge (see distill.schemas.scored_trace)


@dataclass
class TrainingSet:
    items: list[TrainItem]
    kind: Literal["dataset", "ingest"]
    path: Path
    version: str | None
    manifest_sha256: str
    skipped: int = 0
    label_sources: Counter = field(default_factory=Counter)  # items by label source

    @property
    def derived_labels(self) -> int:
        """Items whose label was derived by the filter, not given as gold."""
        return sum(n for source, n in self.label_sources.items() if source != "gold")


def image_root_of(folder: Path, image_root: str | None) -> Path:
    if image_root is None or image_root == ".":
        return folder
    root = Path(image_root)
    return root if root.is_absolute() else (folder / root)


def _checked_shard(folder: Path, ref: ShardRef, manifest: Path) -> Path:
    path = folder / ref.name
    if not path.exists():
        raise InputError(f"shard {ref.name} listed in the manifest is missing", file=manifest,
                         field="shards", reason="missing_file")
    if file_sha256(path) != ref.sha256:
        raise InputError(f"shard {ref.name} changed since it was published (sha256 mismatch)",
                         file=manifest, field="shards", reason="shard_changed")
    return path


def load_training_set(path: str | Path, target: TargetMode = "cot",
                      split: str = "train") -> TrainingSet:
    """Items from a dataset version folder or an ingest folder (by its manifest's kind)."""
    folder = Path(path)
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise DistillError(f"{folder} has no manifest.json: give a dataset version folder "
                           "(distill filter) or an ingest folder (distill ingest)")
    raw = parse_json(manifest_path.read_bytes(), file=manifest_path)
    digest = file_sha256(manifest_path)
    if isinstance(raw, dict) and raw.get("stage") == "ingest":
        return _from_ingest(folder, manifest_path, target, split, digest)
    if isinstance(raw, dict) and "version" in raw:
        return _from_dataset(folder, manifest_path, target, digest)
    raise InputError("not a dataset version or ingest manifest", file=manifest_path,
                     reason="bad_manifest")


def _from_dataset(folder: Path, manifest_path: Path, target: TargetMode,
                  digest: str) -> TrainingSet:
    manifest = open_version(folder)
    root = image_root_of(folder, manifest.image_root)
    items, skipped = [], 0
    for ref in manifest.shards:
        shard = folder / ref.name
        for record in iter_records(shard, ScoredTrace):
            if record.verdict != "keep":
                skipped += 1
                continue
            label, source = record.label, record.label_source
            if label is None or source is None:
                raise InputError(f"kept trace of item {record.sample.id!r} has no gold answer "
                                 "and no derived label (a policy without a label_source "
                                 "rule?); it cannot be trained on", file=shard,
                                 field="signals.label_source", reason="no_label")
            trace = record.trace
            if target == "cot":
                text, mode = target_text("cot", trace.final_answer, trace.reasoning), "cot"
            elif target == "answer":
                text, mode = target_text("direct", trace.final_answer), "direct"
            else:
                text, mode = target_text("direct", label), "direct"
            items.append(TrainItem(record.sample, text, mode, root, source))
    if not items:
        raise DistillError(f"dataset version {manifest.version[:12]} at {folder} has no kept "
                           "traces to train on")
    training = TrainingSet(items, "dataset", folder, manifest.version, digest, skipped)
    training.label_sources.update(item.label_source for item in items)
    if training.derived_labels:
        log.info("training on %d item(s) with derived labels (%s) and %d with gold",
                 training.derived_labels, ", ".join(
                     f"{k} {v}" for k, v in sorted(training.label_sources.items())
                     if k != "gold"), training.label_sources["gold"])
    return training


def _from_ingest(folder: Path, manifest_path: Path, target: TargetMode, split: str,
                 digest: str) -> TrainingSet:
    if target == "cot":
        raise DistillError(f"{folder} is an ingest folder: it has gold answers but no reasoning "
                           "traces; train on it with target 'gold' (or 'answer'), or train "
                           "target 'cot' on a dataset version")
    manifest = read_json_model(manifest_path, StageManifest)
    root = image_root_of(folder, manifest.image_root)
    samples = [ref for ref in manifest.shards if ref.in_folder("samples")]
    refs = [ref for ref in samples if ref.split == split]
    if not refs:
        splits = sorted({ref.split for ref in samples})
        raise DistillError(f"{folder} has no split {split!r} (splits: {splits})")
    items = []
    for ref in refs:
        shard = _checked_shard(folder, ref, manifest_path)
        for sample in iter_records(shard, Sample):
            if sample.answer is None:
                raise InputError(f"item {sample.id!r} has no gold answer: an ingest folder "
                                 "without gold cannot be trained on directly; generate traces "
                                 "and filter them (labels derived by consensus) first",
                                 file=shard, field="answer", reason="no_gold")
            items.append(TrainItem(sample, target_text("direct", sample.answer), "direct", root))
    training = TrainingSet(items, "ingest", folder, None, digest)
    training.label_sources["gold"] = len(items)
    return training
