"""Loading images safely: paths stay inside their root, bytes match their hash, and
decompression bombs or truncated files are refused with a clear error.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from distill.core.errors import InputError
from distill.schemas import ImageRef, sha256_hex
from distill.schemas.sample import check_relative_path

# 50 megapixels: far above any VLM's input size, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(InputError):
    """An image that cannot be used: missing, outside its root, corrupt, too large."""


@lru_cache(maxsize=256)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def resolve_image_path(root: Path | str, relative: str) -> Path:
    """The real path of ``relative`` under ``root``; refuses ``..``, absolute paths and
    symlinks that lead outside the root.

    Fast path (no symlink below the root): one ``lstat`` per component of ``relative``,
    with the root's real path cached; any symlink takes the full ``realpath`` check.
    """
    try:
        check_relative_path(relative)
    except ValueError as exc:
        raise ImageError(str(exc), field="image", reason="path_escape") from None
    root_real = _real_root(os.fspath(root))
    path = root_real
    mode = None
    for part in relative.split("/"):
        if part in ("", "."):
            continue
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise ImageError(f"image file not found: {os.path.join(root_real, relative)}",
                             field="image", reason="missing_image") from None
        if stat.S_ISLNK(mode):
            return _resolve_with_links(root_real, relative)
    if mode is None or not stat.S_ISREG(mode):
        raise ImageError(f"image path {relative!r} is not a file", field="image",
                         reason="missing_image")
    return Path(path)


def _resolve_with_links(root_real: str, relative: str) -> Path:
    candidate = Path(root_real) / relative
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise ImageError(
            f"image file not found: {candidate}", field="image", reason="missing_image"
        ) from None
    if not real.is_relative_to(root_real):
        raise ImageError(
            f"image path {relative!r} resolves to {real}, outside the dataset root {root_real} "
            "(a symlink out of the root)",
            field="image",
            reason="path_escape",
        )
    if not real.is_file():
        raise ImageError(f"image path {relative!r} is not a file", field="image",
                         reason="missing_image")
    return real


def read_image_bytes(ref: ImageRef, root: Path | str | None, *, verify: bool = True) -> bytes:
    """The image's bytes, checked against the sha256 taken at ingestion."""
    data = ref.inline_bytes()
    if data is None:
        if root is None:
            raise ImageError("image is stored by path but no image root is known",
                             field="image.path", reason="missing_image")
        with open(resolve_image_path(root, ref.path or ""), "rb") as handle:
            data = handle.read()
    if verify and sha256_hex(data) != ref.sha256:
        raise ImageError(
            "image bytes changed since ingestion "
            f"(sha256 mismatch for {ref.path or 'inline data'})",
            field="image.sha256",
            reason="image_changed",
        )
    return data


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode to RGB, refusing non-images, truncated files and decompression bombs.

    The size check happens on the header, before any pixel is decompressed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (a decompression bomb or an oversized image)",
                    field="image",
                    reason="image_too_large",
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image refused as a decompression bomb: {exc}", field="image",
                         reason="image_too_large") from None
    except UnidentifiedImageError:
        raise ImageError("file is not a readable image", field="image",
                         reason="unreadable_image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image is corrupt or truncated: {exc}", field="image",
                         reason="unreadable_image") from None
    return image.convert("RGB")


def load_image(ref: ImageRef, root: Path | str | None, *,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return decode_image(read_image_bytes(ref, root), max_pixels=max_pixels)


def image_format_suffix(data: bytes) -> str:
    """File suffix from the image's own header (so copied files keep a truthful name)."""
    with Image.open(io.BytesIO(data)) as image:
        return "." + (image.format or "bin").lower().replace("jpeg", "jpg")
