"""Items from a local Hugging Face `datasets` dataset: saved with ``save_to_disk``, a
parquet file or folder, or an imagefolder (images + metadata.jsonl). Nothing is fetched
from a hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.images import image_source
from distill.ingest.sources.base import SourceRow
from distill.ingest.sources.jsonl import row_to_item

DEFAULT_COLUMNS = {
    "id": "id", "image": "image", "question": "question", "answer": "answer",
    "choices": "choices", "answer_type": "answer_type", "category": "category",
}


def load_local_dataset(path: Path) -> Any:
    """A DatasetDict (or Dataset) from a local folder or parquet file, by its layout; a
    file the datasets library cannot read (a corrupt parquet page, a truncated arrow
    file) is an InputError naming it, whatever the library raised."""
    if not path.exists():
        raise InputError("dataset path does not exist", file=path, reason="missing_file")
    try:
        return _load(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets/pyarrow raise many types for bad files
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(f"not a readable dataset: {reason}", file=path,
                         reason="bad_dataset") from None


def _load(path: Path) -> Any:
    import datasets

    if not path.exists():
        raise InputError("dataset path does not exist", file=path, reason="missing_file")
    if path.is_dir() and any((path / name).exists() for name in
                             ("dataset_dict.json", "dataset_info.json", "state.json")):
        return datasets.load_from_disk(str(path))
    parquet = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
    if parquet:
        return datasets.load_dataset("parquet", data_files=[str(p) for p in parquet])
    if path.is_dir():
        return datasets.load_dataset("imagefolder", data_dir=str(path))
    raise InputError("not a saved dataset, a parquet file or an imagefolder", file=path,
                     reason="bad_dataset")


def iter_hf(path: Path, columns: dict[str, str] | None = None) -> Iterator[SourceRow]:
    """Rows of every split; ``columns`` maps Sample field -> dataset column."""
    import datasets

    mapping = {**DEFAULT_COLUMNS, **(columns or {})}
    loaded = load_local_dataset(path)
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    for split, dataset in splits:
        image_column = mapping["image"]
        if image_column not in dataset.column_names:
            raise InputError(f"no image column {image_column!r}; columns are "
                             f"{dataset.column_names} (map one with --column image=NAME)",
                             file=path, field="image", reason="schema_error")
        if isinstance(dataset.features[image_column], datasets.Image):
            # Keep the original encoded bytes: no re-encoding, so hashes name the source.
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        file = f"{path}[{split}]"
        for index, row in enumerate(dataset):
            try:
                yield _row_item(row, mapping, file=file, line=index, split=split, path=path)
            except InputError as exc:
                yield exc


def _row_item(row: dict[str, Any], mapping: dict[str, str], *, file: str, line: int,
              split: str, path: Path) -> Any:
    picked: dict[str, Any] = {}
    for field, column in mapping.items():
        if field != "image" and column in row and row[column] is not None:
            picked[field] = row[column]
    picked.setdefault("split", split)
    picked["source"] = path.name
    try:
        image = image_source(row[mapping["image"]])
    except InputError as exc:
        raise InputError(exc.message, file=file, line=line, field=exc.field,
                         reason=exc.reason) from None
    item = row_to_item({**picked, "image": "_"}, file=file, line=line, image_root=path,
                       default_id=f"{path.name}-{split}-{line}", default_source=path.name)
    item.image_path = None
    if isinstance(image, bytes):
        item.image_bytes = image
    else:
        item.image_path, item.image_root = Path(image).name, Path(image).parent
    return item
