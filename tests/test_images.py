"""Images stay inside their root, match their hash, and bad files fail clearly."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from distill.core.images import ImageError, decode_image, read_image_bytes, resolve_image_path
from distill.schemas import ImageRef, sha256_hex
from tests.conftest import png_bytes


@pytest.mark.parametrize("relative", ["../outside.png", "a/../../outside.png", "/etc/passwd",
                                      "C:\\x.png", "..\\x.png"])
def test_paths_that_escape_by_spelling_are_refused(image_dir: Path, relative: str) -> None:
    with pytest.raises(ImageError) as info:
        resolve_image_path(image_dir, relative)
    assert info.value.reason == "path_escape"


def test_a_symlink_out_of_the_root_is_refused(image_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(9))
    os.symlink(secret, image_dir / "link.png")
    with pytest.raises(ImageError, match="outside the dataset root"):
        resolve_image_path(image_dir, "link.png")


def test_a_symlink_inside_the_root_is_fine(image_dir: Path) -> None:
    os.symlink(image_dir / "a.png", image_dir / "alias.png")
    assert resolve_image_path(image_dir, "alias.png") == (image_dir / "a.png").resolve()


def test_missing_image(image_dir: Path) -> None:
    with pytest.raises(ImageError) as info:
        resolve_image_path(image_dir, "nope.png")
    assert info.value.reason == "missing_image"


def test_bytes_are_checked_against_the_ingested_hash(image_dir: Path) -> None:
    data = (image_dir / "a.png").read_bytes()
    assert read_image_bytes(ImageRef(path="a.png", sha256=sha256_hex(data)), image_dir) == data
    (image_dir / "a.png").write_bytes(png_bytes(42))
    with pytest.raises(ImageError, match="changed since ingestion"):
        read_image_bytes(ImageRef(path="a.png", sha256=sha256_hex(data)), image_dir)


def test_truncated_and_non_image_files_are_refused() -> None:
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(png_bytes(1, (64, 64))[:200])
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"this is a text file, not a picture")


def test_decompression_bombs_are_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # ~50 KB on disk, 400 MP
    with pytest.raises(ImageError) as info:
        decode_image(buffer.getvalue())
    assert info.value.reason == "image_too_large"
    assert decode_image(png_bytes(3), max_pixels=1_000).size == (16, 16)
