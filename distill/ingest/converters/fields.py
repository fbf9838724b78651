"""Field readers shared by the converters: required text, a list of choices, an image given
as a path, a bytes struct or base64, and the RawItem handed to ingestion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.core.errors import InputError
from distill.core.images import image_source
from distill.ingest.converters.rows import Row
from distill.ingest.sources.base import RawItem
from distill.schemas.sample import CHOICE_LETTERS


def text_field(row: Row, field: str, *, required: bool = True) -> str | None:
    value = row.data.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise row.error("required field is missing or empty", field)
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise row.error(f"must be a string, got {type(value).__name__}", field)
    return str(value)


def choices_field(row: Row, field: str = "choices") -> list[str] | None:
    value = row.data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str | int | float) for c in value):
        raise row.error("must be a list of strings", field)
    choices = [str(c).strip() for c in value]
    if any(not c for c in choices):
        raise row.error("a choice is empty", field)
    if len(choices) > len(CHOICE_LETTERS):
        raise row.error(f"more than {len(CHOICE_LETTERS)} choices", field)
    return choices


def attach_image(item: RawItem, row: Row, value: Any, field: str, image_root: Path) -> None:
    """Set the item's image from a path, a bytes struct or a base64 string."""
    try:
        source = image_source(value, field=field)
    except InputError as exc:
        raise row.error(exc.message, exc.field) from None
    if isinstance(source, bytes):
        item.image_bytes = source
    else:  # a path; if the file is missing, ingestion says so for this row
        item.image_path, item.image_root = source, image_root


def make_item(row: Row, fields: dict[str, Any]) -> RawItem:
    return RawItem(fields=fields, file=row.file, line=row.line)
