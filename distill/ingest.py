"""`distill ingest`: read items from a source and write validated, partitioned Sample shards.

Output layout (all paths in the manifest are relative to OUT)::

    OUT/manifest.json                    StageManifest(stage="ingest")
    OUT/samples/<split>/part-00000.jsonl Sample records, `shard_size` a shard
    OUT/images/ab/ab12...ef.png          copied images, named by sha256 (copy mode)
    OUT/rejects.jsonl                    Rejection records (--on-error skip)

Ingestion writes into a staging folder beside OUT and renames it into place only when
everything succeeded: a failed run leaves nothing that looks like a finished dataset.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click
from pydantic import ValidationError
from rich.table import Table

from distill.errors import DistillError, InputError
from distill.images import DEFAULT_MAX_PIXELS, decode_image, image_format_suffix, resolve_image_path
from distill.progress import console, progress_bar
from distill.shards import ShardWriter, shard_name, write_json_atomic
from distill.sources.base import RawItem, SourceRow
from schemas import ImageRef, Rejection, Sample, ShardRef, StageManifest, sha256_hex

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


@dataclass
class IngestSummary:
    out: Path
    counts: Counter = field(default_factory=Counter)  # (split, category) -> n
    rejects: Counter = field(default_factory=Counter)  # reason -> n
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
            data = disk_path.read_bytes()
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


def _rejection(error: InputError) -> Rejection:
    return Rejection(stage="ingest", key=error.location or "unknown", reason=error.reason,
                     message=error.message, location=error.location, field=error.field)


def ingest(rows: Iterable[SourceRow], options: IngestOptions, *, description: str = "ingest",
           total: int | None = None) -> IngestSummary:
    """Validate every row, write shards and a manifest; atomic as a whole."""
    out = options.out
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise DistillError(f"{out} already exists and is not empty (use --overwrite to replace)")
    staging = out.parent / f".{out.name}.ingest-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    summary = IngestSummary(out=out)
    try:
        manifest = _ingest_into(rows, options, staging, summary, description, total)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary.manifest = manifest
    return summary


def _ingest_into(rows: Iterable[SourceRow], options: IngestOptions, staging: Path,
                 summary: IngestSummary, description: str, total: int | None) -> StageManifest:
    shards = _SplitShards(staging, options.shard_size)
    rejects: ShardWriter | None = None
    seen_ids: dict[str, str] = {}
    reference_root: list[Path] = []
    with progress_bar(description, total=total, unit="items") as bar:
        for row in rows:
            bar.advance()
            try:
                if isinstance(row, InputError):
                    raise row
                sample = _to_sample(row, _image_ref(row, options, staging, reference_root))
                if sample.id in seen_ids:
                    raise InputError(f"duplicate id {sample.id!r} (first seen at "
                                     f"{seen_ids[sample.id]})", file=row.file, line=row.line,
                                     field="id", reason="duplicate_id")
                seen_ids[sample.id] = row.location
            except InputError as error:
                if options.on_error == "fail":
                    raise
                rejects = rejects or ShardWriter(staging / "rejects.jsonl")
                rejects.write(_rejection(error))
                summary.rejects[error.reason] += 1
                continue
            shards.write(sample)
            summary.counts[(sample.split, sample.category)] += 1
    if summary.total == 0:
        raise DistillError("no valid items were read; nothing to write")
    shard_refs = shards.commit_all()
    reject_refs = []
    if rejects is not None:
        reject_refs = [rejects.commit()]
    image_root = str(reference_root[0]) if reference_root else "."
    counts = {f"{split}/{category}": n for (split, category), n in sorted(summary.counts.items())}
    counts["samples"] = summary.total
    counts["rejected"] = sum(summary.rejects.values())
    manifest = StageManifest(
        stage="ingest", created_at=datetime.now(UTC), image_root=image_root,
        shards=shard_refs, rejects=reject_refs, counts=counts,
        config={"shard_size": options.shard_size, "images": options.images,
                "on_error": options.on_error, "source": options.source_config},
    )
    write_json_atomic(staging / "manifest.json", manifest)
    return manifest


def print_summary(summary: IngestSummary) -> None:
    console.print(f"ingested {summary.total:,} samples into {summary.out}")
    table = Table()
    table.add_column("split")
    table.add_column("category")
    table.add_column("samples", justify="right")
    for (split, category), n in sorted(summary.counts.items()):
        table.add_row(split, category, f"{n:,}")
    splits = Counter()
    for (split, _), n in summary.counts.items():
        splits[split] += n
    for split, n in sorted(splits.items()):
        table.add_row(f"[bold]{split}", "[bold]all", f"[bold]{n:,}")
    console.print(table)
    if summary.rejects:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in summary.rejects.most_common())
        console.print(f"[yellow]rejected {sum(summary.rejects.values())} rows ({reasons}); "
                      f"see {summary.out / 'rejects.jsonl'}")


def _parse_columns(pairs: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        field_name, sep, column = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected FIELD=COLUMN, got {pair!r}", param_hint="--column")
        mapping[field_name] = column
    return mapping


def _parse_counts(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    counts = {}
    for part in text.split(","):
        split, _, n = part.partition("=")
        if not n.isdigit():
            raise click.BadParameter(f"expected SPLIT=N[,SPLIT=N], got {text!r}",
                                     param_hint="--counts")
        counts[split.strip()] = int(n)
    return counts


@click.command("ingest")
@click.argument("source", type=click.Choice(["jsonl", "hf", "easy-vqa", "digits"]))
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for the Sample shards and manifest.")
@click.option("--shard-size", default=1000, show_default=True, help="Samples per shard.")
@click.option("--images", "image_mode", type=click.Choice(["copy", "reference", "inline"]),
              default="copy", show_default=True,
              help="Copy images under OUT, reference them in place, or inline their bytes.")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder image paths are relative to (jsonl; default: the file's folder).")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="Stop at the first bad row, or log it to rejects.jsonl.")
@click.option("--column", "columns", multiple=True, metavar="FIELD=COLUMN",
              help="Map a Sample field to a dataset column (hf).")
@click.option("--counts", help="Items per split for digits, e.g. train=8000,val=400,test=600.")
@click.option("--seed", default=0, show_default=True, help="Seed of the digits set.")
@click.option("--categories", help="Question categories of the digits set, comma-separated "
              "(default: all of sum, max_minus_min, count_even, sum_is_even).")
@click.option("--limit", type=int, help="At most this many items per split (easy-vqa).")
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images larger than this (decompression-bomb guard).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def ingest_command(source: str, path: Path | None, out: Path, shard_size: int, image_mode: str,
                   image_root: Path | None, on_error: str, columns: tuple[str, ...],
                   counts: str | None, seed: int, categories: str | None, limit: int | None,
                   max_pixels: int, overwrite: bool) -> None:
    """Read items from SOURCE (jsonl PATH, hf PATH, easy-vqa, digits) into Sample shards."""
    options = IngestOptions(out=out, shard_size=shard_size, images=image_mode,  # type: ignore[arg-type]
                            on_error=on_error, max_pixels=max_pixels,  # type: ignore[arg-type]
                            overwrite=overwrite)
    category_list = tuple(c.strip() for c in categories.split(",")) if categories else None
    rows, total = open_source(source, path, image_root=image_root, columns=_parse_columns(columns),
                              counts=_parse_counts(counts), seed=seed, limit=limit,
                              categories=category_list)
    options.source_config = {"source": source, "path": str(path) if path else None, "seed": seed,
                             "counts": _parse_counts(counts), "limit": limit,
                             "categories": list(category_list) if category_list else None}
    summary = ingest(rows, options, description=f"ingest {source}", total=total)
    print_summary(summary)


def open_source(source: str, path: Path | None, *, image_root: Path | None = None,
                columns: dict[str, str] | None = None, counts: dict[str, int] | None = None,
                seed: int = 0, limit: int | None = None, categories: tuple[str, ...] | None = None,
                ) -> tuple[Iterable[SourceRow], int | None]:
    """The rows of a named source, and their number when known up front."""
    if source in ("jsonl", "hf") and path is None:
        raise DistillError(f"'distill ingest {source}' needs a PATH")
    if source == "jsonl":
        from distill.sources.jsonl import iter_jsonl

        if not path.is_file():  # type: ignore[union-attr]
            raise InputError("file not found", file=path, reason="missing_file")
        return iter_jsonl(path, image_root), None  # type: ignore[arg-type]
    if source == "hf":
        from distill.sources.hf import iter_hf

        return iter_hf(path, columns), None  # type: ignore[arg-type]
    if source == "easy-vqa":
        from distill.sources.easy_vqa import iter_easy_vqa

        return iter_easy_vqa(limit_per_split=limit), None
    from distill.sources.digits import DigitsConfig, iter_digits

    config = DigitsConfig(seed=seed)
    if counts:
        config = dataclasses.replace(config, counts=counts)
    if categories:
        config = dataclasses.replace(config, categories=categories)
    return iter_digits(config), sum(config.counts.values())
