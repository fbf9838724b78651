"""`distill schemas export`: JSON Schema files so other tools can validate our files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from distill.schemas import RECORD_TYPES


def export_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in RECORD_TYPES.items():
        path = out_dir / f"{name}.schema.json"
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


@click.group("schemas")
def schemas_group() -> None:
    """The record schemas (the contract between stages)."""


@schemas_group.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export_command(out_dir: Path) -> None:
    """Write one JSON Schema file per record kind into OUT_DIR."""
    for path in export_schemas(out_dir):
        click.echo(str(path))
