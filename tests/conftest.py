"""Shared test setup: offline, quiet, and a few real-data builders."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DISTILL_PROGRESS", "0")


def png_bytes(seed: int = 0, size: tuple[int, int] = (16, 16)) -> bytes:
    """A small real PNG with seed-dependent pixels (distinct seeds -> distinct hashes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    """Rows as JSON lines; a str row is written verbatim (to plant malformed lines)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder of real PNGs a.png, b.png, c.png."""
    folder = tmp_path / "images"
    folder.mkdir()
    for seed, name in enumerate(["a", "b", "c"]):
        (folder / f"{name}.png").write_bytes(png_bytes(seed))
    return folder
