"""`distill ingest` and `distill eval convert`: the command line over ``pipeline.ingest``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.table import Table

from distill.core.images import DEFAULT_MAX_PIXELS
from distill.core.progress import console, plain
from distill.ingest.converters import FORMATS, ConvertStats, iter_converted
from distill.ingest.pipeline import IngestOptions, IngestSummary, ingest, open_source

WAIT_OPTION = click.option("--wait", is_flag=True, help="If another ingest is writing OUT, "
                           "wait for it instead of exiting.")


def print_summary(summary: IngestSummary) -> None:
    console.print(f"ingested {summary.total:,} samples into {plain(summary.out)}")
    if summary.no_gold:
        console.print(f"{summary.no_gold:,} of them have no gold answer: their labels can "
                      "only be derived (distill filter marks them label_source consensus/judge)")
    table = Table()
    table.add_column("split")
    table.add_column("category")
    table.add_column("samples", justify="right")
    for (split, category), n in sorted(summary.counts.items()):
        table.add_row(plain(split), plain(category), f"{n:,}")
    splits = Counter()
    for (split, _), n in summary.counts.items():
        splits[split] += n
    for split, n in sorted(splits.items()):
        table.add_row(f"[bold]{plain(split)}", "[bold]all", f"[bold]{n:,}")
    console.print(table)
    if summary.rejects:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in summary.rejects.most_common())
        console.print(f"[yellow]rejected {sum(summary.rejects.values())} rows "
                      f"({plain(reasons)}); see {plain(summary.out / 'rejects.jsonl')}")


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


def _inputs(*paths: Path | None) -> tuple[Path, ...]:
    """What a source reads (its file or folder, its image root): never inside OUT."""
    return tuple(path for path in paths if path is not None)


@click.command("ingest")
@click.argument("source", type=click.Choice(["jsonl", "hf", "easy-vqa", "digits"]))
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for the Sample shards and manifest.")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Samples per shard.")
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
              type=click.IntRange(min=1),
              help="Refuse images larger than this (decompression-bomb guard).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--withhold-gold", help="Comma-separated splits to ingest WITHOUT their gold "
              "answers (an unlabeled pool: labels are derived from teacher consensus); the "
              "gold goes to --gold-out, for measuring derived labels only.")
@click.option("--gold-out", type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL file (outside OUT) for the withheld gold answers.")
@WAIT_OPTION
def ingest_command(source: str, path: Path | None, out: Path, shard_size: int, image_mode: str,
                   image_root: Path | None, on_error: str, columns: tuple[str, ...],
                   counts: str | None, seed: int, categories: str | None, limit: int | None,
                   max_pixels: int, overwrite: bool, withhold_gold: str | None,
                   gold_out: Path | None, wait: bool) -> None:
    """Read items from SOURCE (jsonl PATH, hf PATH, easy-vqa, digits) into Sample shards."""
    withheld = tuple(s.strip() for s in withhold_gold.split(",") if s.strip()) \
        if withhold_gold else ()
    options = IngestOptions(out=out, shard_size=shard_size, images=image_mode,  # type: ignore[arg-type]
                            on_error=on_error, max_pixels=max_pixels,  # type: ignore[arg-type]
                            overwrite=overwrite, withhold_gold=withheld, gold_out=gold_out,
                            wait=wait, inputs=_inputs(path, image_root))
    category_list = tuple(c.strip() for c in categories.split(",")) if categories else None
    rows, total = open_source(source, path, image_root=image_root, columns=_parse_columns(columns),
                              counts=_parse_counts(counts), seed=seed, limit=limit,
                              categories=category_list)
    options.source_config = {"source": source, "path": str(path) if path else None, "seed": seed,
                             "counts": _parse_counts(counts), "limit": limit,
                             "categories": list(category_list) if category_list else None}
    summary = ingest(rows, options, description=f"ingest {source}", total=total)
    print_summary(summary)


@click.command("convert")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(sorted(FORMATS)))
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output ingest folder (then: distill eval --data OUT).")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder image paths are relative to (default: the input file's folder).")
@click.option("--split", default="test", show_default=True, help="Split to file items under.")
@click.option("--category-field", help="Record field used as category (default per "
                                       "format: mathvista metadata.task, scienceqa subject, "
                                       "mmstar category, mmmu the subject in the id, ai2d "
                                       "category, chartqa type, mathverse problem_version, "
                                       "hallusionbench subcategory).")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="Stop at the first bad row, or log it to rejects.jsonl.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--relative-tolerance", type=click.FloatRange(0, 1, min_open=True,
                                                            max_open=True),
              help="Judge number answers within this share of the gold (0.05: ChartQA's "
                   "relaxed accuracy); default exact, to the item's precision.")
@WAIT_OPTION
def convert_command(fmt: str, source: Path, out: Path, image_root: Path | None, split: str,
                    category_field: str | None, on_error: str, overwrite: bool,
                    relative_tolerance: float | None, wait: bool) -> None:
    """Convert a benchmark's local file (JSON, JSONL, parquet, TSV) in the layout its
    publishers ship (MathVista, ScienceQA, MMStar, MMMU, AI2D, ChartQA, MathVerse,
    HallusionBench) into an eval set folder."""
    stats = ConvertStats()
    rows = iter_converted(fmt, source, image_root=image_root, split=split,
                          category_field=category_field, stats=stats,
                          relative_tolerance=relative_tolerance)
    options = IngestOptions(out=out, on_error=on_error, overwrite=overwrite,  # type: ignore[arg-type]
                            require_gold=True, wait=wait, inputs=_inputs(source, image_root),
                            source_config={"source": f"convert:{fmt}", "path": str(source),
                                           "category_field": category_field,
                                           **({"relative_tolerance": relative_tolerance}
                                              if relative_tolerance is not None else {})})
    summary = ingest(rows, options, description=f"convert {fmt}")
    print_summary(summary)
    for reason, count in sorted(stats.skipped.items()):
        console.print(f"[yellow]skipped {count} item(s): {plain(reason)}")
