"""Converters from the layouts common eval sets ship in, read from local files only, into an
ingest folder (Sample shards + copied images + manifest) that ``distill eval`` reads. One
module per benchmark (its docstring names the layout): mathvista, scienceqa, mmstar, mmmu,
ai2d, chartqa, mathverse, hallusionbench.

Images may be paths (relative to ``--image-root``, default the input file's folder),
``{"bytes": ..., "path": ...}`` structs (parquet) or base64 strings (TSV). Every bad row
is an error naming the file, the row (line for JSONL, row number for parquet/TSV, key for
JSON) and the field. Items an eval cannot use (no image; several images) are skipped and
counted by reason, never silently.

Every Sample keeps the benchmark's own id in ``meta.source_id``: ``distill eval import``
matches another harness's rows to items by it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.answers import TOLERANCE_KEY
from distill.core.errors import InputError
from distill.ingest.converters.ai2d import ai2d_item
from distill.ingest.converters.chartqa import chartqa_item
from distill.ingest.converters.common import Skipped
from distill.ingest.converters.hallusionbench import hallusionbench_item
from distill.ingest.converters.mathverse import mathverse_item
from distill.ingest.converters.mathvista import mathvista_item
from distill.ingest.converters.mmmu import mmmu_item
from distill.ingest.converters.mmstar import mmstar_item
from distill.ingest.converters.rows import Row, read_rows
from distill.ingest.converters.scienceqa import scienceqa_item
from distill.ingest.sources.base import RawItem, SourceRow


@dataclass(frozen=True)
class Format:
    convert: Callable[..., RawItem | None]
    category_field: str


FORMATS: dict[str, Format] = {
    "mathvista": Format(mathvista_item, "task"),
    "scienceqa": Format(scienceqa_item, "subject"),
    "mmstar": Format(mmstar_item, "category"),
    "mmmu": Format(mmmu_item, "subject"),
    "ai2d": Format(ai2d_item, "category"),
    "chartqa": Format(chartqa_item, "type"),
    "mathverse": Format(mathverse_item, "problem_version"),
    "hallusionbench": Format(hallusionbench_item, "subcategory"),
}


@dataclass
class ConvertStats:
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> items left out

    @property
    def skipped_no_image(self) -> int:
        return self.skipped["no image"]


def iter_converted(fmt: str, path: Path, *, image_root: Path | None = None,
                   split: str = "test", category_field: str | None = None,
                   stats: ConvertStats | None = None,
                   relative_tolerance: float | None = None) -> Iterator[SourceRow]:
    """RawItems (or the InputErrors of bad rows, in place) for ``distill.ingest.ingest``.

    ``relative_tolerance`` (e.g. 0.05, ChartQA's relaxed accuracy) goes into every number
    item's meta, where the answer judge reads it; item content hashes do not change."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}", file=path,
                         reason="config_error")
    spec = FORMATS[fmt]
    root = (image_root or path.parent).resolve()
    stats = stats if stats is not None else ConvertStats()
    for row in read_rows(path):
        if isinstance(row, InputError):
            yield row
            continue
        try:
            item = spec.convert(row, image_root=root, split=split,
                                category_field=category_field or spec.category_field)
        except Skipped as skip:
            stats.skipped[skip.reason] += 1
            continue
        except InputError as exc:
            yield exc
            continue
        if item is None:
            stats.skipped["no image"] += 1
            continue
        if relative_tolerance is not None and item.fields.get("answer_type") == "number":
            item.fields["meta"] = {**(item.fields.get("meta") or {}),
                                   TOLERANCE_KEY: relative_tolerance}
        yield item


__all__ = ["FORMATS", "ConvertStats", "Format", "Row", "iter_converted", "read_rows"]
