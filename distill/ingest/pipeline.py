"""Ingestion: read items from a source and write validated, partitioned Sample shards.

Output layout (all paths in the manifest are relative to OUT)::

    OUT/manifest.json                    StageManifest(stage="ingest")
    OUT/samples/<split>/part-00000.jsonl Sample records, `shard_size` a shard
    OUT/images/ab/ab12...ef.png          copied images, named by sha256 (copy mode)
    OUT/rejects.jsonl                    Rejection records (--on-error skip)

``--withhold-gold SPLITS --gold-out FILE`` ingests the items of those splits *without*
their gold answers (as an unlabeled pool would arrive) and writes the gold, one
``{"id", "split", "answer"}`` object a line, to FILE outside OUT: kept for measuring
derived labels against it, never read by any stage.

Ingestion writes into a staging folder beside OUT and puts it in place only when
everything succeeded (``distill.core.folders``: the old OUT is renamed aside first and
deleted last), so a failed or killed run leaves nothing that looks like a finished
dataset and never loses the old one.
Two ingests into the same OUT would race on that rename; the core's single-writer guard
(``PARENT/.OUT.lock``, beside OUT since OUT itself is replaced) lets one run at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from distill.core.errors import DistillError, InputError
from distill.core.folders import (
    check_replaceable,
    claim_output,
    discard_staging,
    replace_folder,
    staging_folder,
    sweep_leftovers,
)
from distill.core.images import (
    DEFAULT_MAX_PIXELS,
    decode_image,
    image_format_suffix,
    read_image_file,
    resolve_image_path,
)
from distill.core.locks import lock_path_beside, single_writer
from distill.core.paths import relative_to
from distill.core.progress import progress_bar
from distill.core.shards import (
    ShardWriter,
    read_json_model,
    shard_name,
    write_bytes_atomic,
    write_json_atomic,
)
from distill.ingest.sources.base import RawItem, SourceRow
from distill.schemas import ImageRef, Rejection, Sample, ShardRef, StageManifest, sha256_hex

ImageMode = Literal["copy", "reference", "inline"]
OnError = Literal["fail", "skip"]


@dataclass
class IngestOptions:
    out: Path
    shard_size: int = 1000
    images: ImageMode = "copy"
    on_error: OnError = "fail"
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    source_config: dict = field(default_factory=dict)
    withhold_gold: tuple[str, ...] = ()  # splits ingested without their gold answers
    gold_out: Path | None = None  # where the withheld gold goes (outside ``out``)
    require_gold: bool = False  # an eval set: a row without a gold answer is a bad row
    wait: bool = False  # wait for another ingest into the same OUT instead of exiting
    inputs: tuple[Path, ...] = ()  # what the source reads (file, image root): never in OUT


@dataclass
class IngestSummary:
    out: Path
    counts: Counter = field(default_factory=Counter)  # (split, category) -> n
    rejects: Counter = field(default_factory=Counter)  # reason -> n
    no_gold: int = 0  # samples written without a gold answer
    manifest: StageManifest | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _SplitShards:
    """Rotating shard writers, one sequence per split."""

    def __init__(self, root: Path, shard_size: int) -> None:
        self.root, self.shard_size = root, shard_size
        self.writers: dict[str, ShardWriter] = {}
        self.rows: Counter = Counter()
        self.finished: list[ShardRef] = []

    def write(self, sample: Sample) -> None:
        split = sample.split
        if split in self.writers and self.rows[split] % self.shard_size == 0:
            self._commit(split)
        if split not in self.writers:
            index = self.rows[split] // self.shard_size
            self.writers[split] = ShardWriter(self.root / "samples" / split / shard_name(index),
                                              flush_every=4096)
        self.writers[split].write(sample)
        self.rows[split] += 1

    def _commit(self, split: str) -> None:
        writer = self.writers.pop(split)
        ref = writer.commit()
        name = writer.final_path.relative_to(self.root).as_posix()
        self.finished.append(ref.model_copy(update={"name": name}))

    def commit_all(self) -> list[ShardRef]:
        for split in list(self.writers):
            self._commit(split)
        return sorted(self.finished, key=lambda ref: ref.name)


def _image_ref(item: RawItem, options: IngestOptions, staging: Path,
               reference_root: list[Path]) -> ImageRef:
    """Read, validate and place the item's image; returns the ref the Sample will hold."""
    def located(exc: InputError) -> InputError:
        return InputError(exc.message, file=item.file, line=item.line,
                          field=exc.field or "image", reason=exc.reason)

    try:
        if item.image_bytes is not None:
            data, disk_path = item.image_bytes, None
        else:
            if item.image_root is None or item.image_path is None:
                raise InputError("row has no image", field="image", reason="missing_image")
            disk_path = resolve_image_path(item.image_root, item.image_path)
            data = read_image_file(disk_path)
        if not isinstance(data, bytes):
            raise InputError(f"image must be bytes, got {type(data).__name__}",
                             field="image", reason="schema_error")
        decode_image(data, max_pixels=options.max_pixels)
    except InputError as exc:
        raise located(exc) from None
    digest = sha256_hex(data)
    if options.images == "inline":
        return ImageRef.inline(data, digest)
    if options.images == "reference" and disk_path is not None:
        root = Path(item.image_root).resolve()  # type: ignore[arg-type]
        if reference_root and reference_root[0] != root:
            raise InputError(f"--images reference needs one image root; saw {reference_root[0]} "
                             f"and {root} (use --images copy)", file=item.file, line=item.line,
                             field="image", reason="config_error")
        reference_root[:1] = [root]
        return ImageRef(path=disk_path.relative_to(root).as_posix(), sha256=digest)
    relative = f"images/{digest[:2]}/{digest}{image_format_suffix(data)}"
    target = staging / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return ImageRef(path=relative, sha256=digest)


def _to_sample(item: RawItem, ref: ImageRef) -> Sample:
    try:
        return Sample.model_validate({**item.fields, "image": ref})
    except ValidationError as exc:
        raise InputError.from_validation(exc, file=item.file, line=item.line) from None


def _nothing_read(options: IngestOptions, summary: IngestSummary,
                  first_rejected: InputError | None) -> DistillError:
    """Nothing valid to write: say from where, and why the first refused row was refused
    (under --on-error skip its rejects file is not kept: there is no dataset to hold it)."""
    source = options.source_config.get("path")
    where = f" from {source}" if source else ""
    if first_rejected is None:
        return DistillError(f"no valid items were read{where}; nothing to write")
    return DistillError(f"no valid items were read{where}: all "
                        f"{sum(summary.rejects.values())} rows were refused; the first: "
                        f"{first_rejected}")


def _claim_id(sample: Sample, row: RawItem, seen_ids: dict[str, str]) -> None:
    """Refuse a second row with the same id, naming both rows and their own ids (the
    converters' id map is one to one, ``distill.core.paths.id_part``, so two rows collide
    only when the source gives one id twice)."""
    source_id = sample.meta.get("source_id") if isinstance(sample.meta, dict) else None
    this = row.location + (f" (source id {source_id!r})" if source_id is not None else "")
    first = seen_ids.setdefault(sample.id, this)
    if first is not this:
        raise InputError(f"duplicate id {sample.id!r}: this row{this[len(row.location):]} "
                         f"and the row first seen at {first} both give it",
                         file=row.file, line=row.line, field="id", reason="duplicate_id")


def _rejection(error: InputError) -> Rejection:
    return Rejection(stage="ingest", key=error.location or "unknown", reason=error.reason,
                     message=error.message, location=error.location, field=error.field)


def ingest(rows: Iterable[SourceRow], options: IngestOptions, *, description: str = "ingest",
           total: int | None = None) -> IngestSummary:
    """Validate every row, write shards and a manifest; atomic as a whole."""
    if options.shard_size < 1:
        raise DistillError(f"shard size must be at least 1, got {options.shard_size}")
    out = claim_output(options.out, "ingest", inputs=options.inputs)
    options = dataclasses.replace(options, out=out)
    with single_writer(lock_path_beside(out), str(out), wait=options.wait):
        return _ingest_locked(rows, options, description, total)


def _ingest_locked(rows: Iterable[SourceRow], options: IngestOptions, description: str,
                   total: int | None) -> IngestSummary:
    out = options.out
    _check_withholding(options)
    sweep_leftovers(out)
    if out.exists() and any(out.iterdir()):
        if not options.overwrite:
            raise DistillError(f"{out} already exists and is not empty (use --overwrite to "
                               "replace a folder that distill ingest wrote)")
        check_replaceable(out, "ingest", written_by_ingest(out))
    staging = staging_folder(out)
    summary = IngestSummary(out=out)
    withheld: list[dict] = []
    try:
        manifest = _ingest_into(rows, options, staging, summary, description, total, withheld)
        if options.gold_out is not None:
            write_bytes_atomic(options.gold_out, "".join(
                json.dumps(row, ensure_ascii=False) + "\n" for row in withheld).encode())
        replace_folder(staging, out)
    except BaseException:
        discard_staging(staging)
        raise
    summary.manifest = manifest
    return summary


# A copied image's name: images/<first two hex digits>/<sha256><suffix> (``_image_ref``).
_IMAGE_NAME = re.compile(r"images/([0-9a-f]{2})/\1[0-9a-f]{62}\.[a-z0-9]{1,5}")


def written_by_ingest(out: Path) -> Callable[[str], bool]:
    """Which files of an ingest folder ingest itself wrote: its manifest, the shards and
    rejects that manifest names, and images under their content names. A folder without
    a readable ingest manifest owns nothing (``--overwrite`` then names every file)."""
    try:
        manifest = read_json_model(out / "manifest.json", StageManifest)
    except DistillError:
        return lambda name: False
    if manifest.stage != "ingest":
        return lambda name: False
    named = {"manifest.json", *(ref.name for ref in manifest.shards),
             *(ref.name for ref in manifest.rejects)}
    return lambda name: name in named or _IMAGE_NAME.fullmatch(name) is not None


def _check_withholding(options: IngestOptions) -> None:
    if bool(options.withhold_gold) != (options.gold_out is not None):
        raise DistillError("--withhold-gold SPLITS and --gold-out FILE go together: the "
                           "withheld gold must be kept somewhere, outside the ingest folder")
    if options.gold_out is not None:
        gold, out = options.gold_out.resolve(), options.out.resolve()
        if gold == out or out in gold.parents:
            raise DistillError(f"--gold-out {options.gold_out} is inside {options.out}: the "
                               "withheld gold must stay out of what the pipeline reads")


def _withhold(sample: Sample, options: IngestOptions, withheld: list[dict]) -> Sample:
    """The sample without its gold if its split is withheld (the gold goes to the list)."""
    if sample.split not in options.withhold_gold or sample.answer is None:
        return sample
    withheld.append({"id": sample.id, "split": sample.split, "answer": sample.answer})
    return sample.model_copy(update={"answer": None})


def _ingest_into(rows: Iterable[SourceRow], options: IngestOptions, staging: Path,
                 summary: IngestSummary, description: str, total: int | None,
                 withheld: list[dict]) -> StageManifest:
    shards = _SplitShards(staging, options.shard_size)
    rejects: ShardWriter | None = None
    first_rejected: InputError | None = None
    seen_ids: dict[str, str] = {}  # id -> the row that gave it (location, source id)
    reference_root: list[Path] = []
    with progress_bar(description, total=total, unit="items") as bar:
        for row in rows:
            bar.advance()
            try:
                if isinstance(row, InputError):
                    raise row
                sample = _to_sample(row, _image_ref(row, options, staging, reference_root))
                if options.require_gold and sample.answer is None:
                    raise InputError("no gold answer: an eval set needs one for every item",
                                     file=row.file, line=row.line, field="answer",
                                     reason="no_gold")
                _claim_id(sample, row, seen_ids)
            except InputError as error:
                if options.on_error == "fail":
                    raise
                first_rejected = first_rejected or error
                rejects = rejects or ShardWriter(staging / "rejects.jsonl")
                rejects.write(_rejection(error))
                summary.rejects[error.reason] += 1
                continue
            sample = _withhold(sample, options, withheld)
            shards.write(sample)
            summary.counts[(sample.split, sample.category)] += 1
            summary.no_gold += sample.answer is None
    if summary.total == 0:
        raise _nothing_read(options, summary, first_rejected)
    shard_refs = shards.commit_all()
    reject_refs = []
    if rejects is not None:
        reject_refs = [rejects.commit()]
    # Relative to OUT (staging becomes OUT, beside it): a moved project still finds them.
    image_root = relative_to(reference_root[0], options.out) if reference_root else "."
    counts = {f"{split}/{category}": n for (split, category), n in sorted(summary.counts.items())}
    counts["samples"] = summary.total
    counts["samples_without_gold"] = summary.no_gold
    counts["rejected"] = sum(summary.rejects.values())
    config = {"shard_size": options.shard_size, "images": options.images,
              "on_error": options.on_error, "source": options.source_config}
    if options.gold_out is not None:  # where the gold went, for people; never read back
        config["withheld_gold"] = {"splits": list(options.withhold_gold),
                                   "file": str(options.gold_out.resolve())}
    manifest = StageManifest(
        stage="ingest", created_at=datetime.now(UTC), image_root=image_root,
        shards=shard_refs, rejects=reject_refs, counts=counts, config=config,
    )
    write_json_atomic(staging / "manifest.json", manifest)
    return manifest


def open_source(source: str, path: Path | None, *, image_root: Path | None = None,
                columns: dict[str, str] | None = None, counts: dict[str, int] | None = None,
                seed: int = 0, limit: int | None = None, categories: tuple[str, ...] | None = None,
                ) -> tuple[Iterable[SourceRow], int | None]:
    """The rows of a named source, and their number when known up front."""
    if source in ("jsonl", "hf") and path is None:
        raise DistillError(f"'distill ingest {source}' needs a PATH")
    if source == "jsonl":
        from distill.ingest.sources.jsonl import iter_jsonl

        if not path.is_file():  # type: ignore[union-attr]
            raise InputError("file not found", file=path, reason="missing_file")
        return iter_jsonl(path, image_root), None  # type: ignore[arg-type]
    if source == "hf":
        from distill.ingest.sources.hf import iter_hf

        return iter_hf(path, columns), None  # type: ignore[arg-type]
    if source == "easy-vqa":
        from distill.ingest.sources.easy_vqa import iter_easy_vqa

        return iter_easy_vqa(limit_per_split=limit), None
    from distill.ingest.sources.digits import DigitsConfig, iter_digits

    config = DigitsConfig(seed=seed)
    if counts:
        config = dataclasses.replace(config, counts=counts)
    if categories:
        config = dataclasses.replace(config, categories=categories)
    return iter_digits(config), sum(config.counts.values())
