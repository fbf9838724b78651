"""`distill datasets export`: a version as flat JSONL, Parquet or a Hugging Face dataset.

One row per kept trace: the item (question, choices, gold answer, image), its label and
where that comes from (``label_source``: gold, or consensus/judge for a label derived from
the teachers; ``answer`` stays the gold, null without one), the teacher's output
(reasoning, final answer, raw text) and every signal. Rows stream from the
version's shards to the output (bounded memory).

Every export (these and the conversation layouts) goes through ``export_target``: the
version is checked first (its name, shards and pooled images: ``DatasetStore.open``), one
export at a time writes OUT (``.OUT.lock`` beside it), the output is written beside OUT
as ``.OUT.tmp-PID`` and renamed into place when complete, what a killed export left there
is removed by the next one, and a file-system failure is one line naming the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from distill.core.errors import DistillError, file_system_error
from distill.core.images import read_image_bytes
from distill.core.locks import lock_path_beside, single_writer
from distill.core.shards import fsync_dir, iter_records
from distill.filter.signals import SIGNALS
from distill.filter.store import DatasetStore
from distill.schemas import ScoredTrace

ExportFormat = Literal["jsonl", "parquet", "hf"]
_BATCH = 1024


def _rows(store: DatasetStore, version: str, with_bytes: bool = False) -> Iterator[dict]:
    manifest = store.manifest(version)
    folder = store.version_dir(version)
    image_root = (folder / manifest.image_root).resolve() if manifest.image_root else None
    for ref in manifest.shards:
        for record in iter_records(folder / ref.name, ScoredTrace):
            yield _row(record, image_root, with_bytes)


def _row(record: ScoredTrace, image_root: Path | None, with_bytes: bool) -> dict:
    sample, trace = record.sample, record.trace
    image_path = str(image_root / sample.image.path) if sample.image.path and image_root else None
    row = {
        "trace_key": trace.trace_key,
        "sample_id": sample.id,
        "split": sample.split,
        "category": sample.category,
        "question": sample.question,
        "choices": sample.choices,
        "answer": sample.answer,
        "label": record.label,
        "label_source": record.label_source,
        "answer_type": sample.answer_type,
        "image_path": image_path,
        "image_sha256": sample.image.sha256,
        "teacher_id": trace.teacher_id,
        "model": trace.model,
        "prompt_id": trace.prompt_id,
        "k": trace.k,
        "reasoning": trace.reasoning,
        "final_answer": trace.final_answer,
        "raw_text": trace.raw_text,
        "completion_tokens": trace.completion_tokens,
        "signals": {name: record.signals.get(name) for name in SIGNALS},
    }
    if with_bytes:
        row["image"] = {"bytes": read_image_bytes(sample.image, image_root), "path": None}
    return row


def refuse_existing(out: Path) -> None:
    """An export never overwrites: a finished file or folder at OUT is someone's data."""
    if out.exists() or out.is_symlink():
        raise DistillError(f"{out} already exists; choose another --out or remove it")


@contextlib.contextmanager
def export_target(out: Path) -> Iterator[Path]:
    """The temp path an export writes (file or folder), renamed to ``out`` when the body
    returns; see the module docstring."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with single_writer(lock_path_beside(out), f"export {out}"):
            refuse_existing(out)
            _remove_leftovers(out)  # under the lock, any temp of OUT is a dead export's
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            try:
                yield tmp
                os.replace(tmp, out)
                fsync_dir(out.parent)
            finally:
                _remove(tmp)
                _remove(tmp.with_name(tmp.name + ".cache"))
    except OSError as exc:
        raise file_system_error(exc, "cannot export", out) from None


def _remove_leftovers(out: Path) -> None:
    for leftover in out.parent.glob(f".{out.name}.tmp-*"):
        _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export_version(store: DatasetStore, version: str, fmt: ExportFormat, out: Path) -> int:
    """Write the version (an id, a prefix or 'latest'; checked first) to ``out``; returns
    the number of rows."""
    writers = {"jsonl": _export_jsonl, "parquet": _export_parquet, "hf": _export_hf}
    if fmt not in writers:
        raise DistillError(f"unknown export format {fmt!r}")
    version, _ = store.open(version)
    with export_target(Path(out)) as tmp:
        return writers[fmt](store, version, tmp)


def _export_jsonl(store: DatasetStore, version: str, path: Path) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in _rows(store, version):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return count


def _arrow_schema():  # noqa: ANN202 - pyarrow is imported lazily
    import pyarrow as pa

    kinds = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    signals = pa.struct([pa.field(s.name, kinds[s.kind]) for s in SIGNALS.values()])
    return pa.schema([
        ("trace_key", pa.string()), ("sample_id", pa.string()), ("split", pa.string()),
        ("category", pa.string()), ("question", pa.string()), ("choices", pa.list_(pa.string())),
        ("answer", pa.string()), ("label", pa.string()), ("label_source", pa.string()),
        ("answer_type", pa.string()), ("image_path", pa.string()),
        ("image_sha256", pa.string()), ("teacher_id", pa.string()), ("model", pa.string()),
        ("prompt_id", pa.string()), ("k", pa.int64()), ("reasoning", pa.string()),
        ("final_answer", pa.string()), ("raw_text", pa.string()),
        ("completion_tokens", pa.int64()), ("signals", signals),
    ])


def _export_parquet(store: DatasetStore, version: str, path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for row in _rows(store, version):
            batch.append(row)
            if len(batch) >= _BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def _export_hf(store: DatasetStore, version: str, path: Path) -> int:
    """A `datasets.load_from_disk` folder with the image bytes embedded (an Image column)."""
    import datasets

    kinds = {"bool": "bool", "int": "int64", "float": "float64", "str": "string"}
    features = datasets.Features({
        **{name: datasets.Value("string") for name in (
            "trace_key", "sample_id", "split", "category", "question", "answer", "label",
            "label_source", "answer_type",
            "image_path", "image_sha256", "teacher_id", "model", "prompt_id", "reasoning",
            "final_answer", "raw_text")},
        "choices": datasets.Sequence(datasets.Value("string")),
        "k": datasets.Value("int64"),
        "completion_tokens": datasets.Value("int64"),
        "signals": {s.name: datasets.Value(kinds[s.kind]) for s in SIGNALS.values()},
        "image": datasets.Image(),
    })
    return save_generated(_rows, {"store": store, "version": version, "with_bytes": True},
                          features, path)


def save_generated(generator, gen_kwargs: dict, features, path: Path) -> int:  # noqa: ANN001
    """Stream ``generator(**gen_kwargs)`` into a `save_to_disk` folder at ``path`` (through a
    cache beside it, removed afterwards); returns the row count. Used by every HF layout."""
    import datasets

    cache = path.with_name(path.name + ".cache")  # beside it: removed with it after a kill
    try:
        dataset = datasets.Dataset.from_generator(generator, gen_kwargs=gen_kwargs,
                                                  features=features, cache_dir=str(cache))
        dataset.save_to_disk(str(path))
        return len(dataset)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
