"""Loading images safely: paths stay inside their root, bytes match their hash, and
decompression bombs or truncated files are refused with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import os
import stat
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from distill.core.errors import InputError
from distill.core.formatting import NAME_MAX
from distill.schemas import ImageRef, sha256_hex
from distill.schemas.sample import check_relative_path

# 50 megapixels: far above any VLM's input size, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 50_000_000
# An image file larger than this is refused before it is read (a 50-megapixel image
# stored raw as a BMP is 150 MB; a 40 GB "image" would be read whole into memory).
MAX_IMAGE_BYTES = 256 * 1024 * 1024
# The first bytes of the formats we decode: how base64 text is told apart from a path.
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
                b"II*\x00", b"MM\x00*", b"RIFF")


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
        except OSError as exc:  # a name longer than NAME_MAX, a folder we may not read
            raise _unusable_path(relative, exc) from None
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
    except (OSError, RuntimeError) as exc:  # a link loop, a name too long
        raise _unusable_path(relative, exc) from None
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


def _unusable_path(relative: str, exc: BaseException) -> ImageError:
    """A path the file system refuses to look up, as a row error (never a traceback)."""
    if getattr(exc, "errno", None) == errno.ENAMETOOLONG:
        longest = max(relative.split("/"), key=lambda part: len(part.encode()))
        return ImageError(f"image path {relative[:80]!r}... has a name of "
                          f"{len(longest.encode()):,} bytes, longer than the file system "
                          f"allows ({NAME_MAX})", field="image", reason="name_too_long")
    reason = getattr(exc, "strerror", None) or str(exc)
    return ImageError(f"image path {relative[:200]!r} cannot be looked up: {reason}",
                      field="image", reason="missing_image")


def read_image_bytes(ref: ImageRef, root: Path | str | None, *, verify: bool = True) -> bytes:
    """The image's bytes, checked against the sha256 taken at ingestion."""
    data = ref.inline_bytes()
    if data is None:
        if root is None:
            raise ImageError("image is stored by path but no image root is known",
                             field="image.path", reason="missing_image")
        data = read_image_file(resolve_image_path(root, ref.path or ""))
    if verify and sha256_hex(data) != ref.sha256:
        raise ImageError(
            "image bytes changed since ingestion "
            f"(sha256 mismatch for {ref.path or 'inline data'})",
            field="image.sha256",
            reason="image_changed",
        )
    return data


def read_image_file(path: Path | str) -> bytes:
    """An image file's bytes, its size checked (stat) before anything is read."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                raise ImageError(f"image file {path} is {size:,} bytes, over the limit of "
                                 f"{MAX_IMAGE_BYTES:,}", field="image", reason="image_too_large")
            return handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror}", field="image",
                         reason="missing_image") from None


def image_source(value: object, *, field: str = "image") -> bytes | str:
    """What an image cell holds, typed: its bytes, or a path (str) to resolve later.

    Accepts raw bytes, a ``{"bytes": ..., "path": ...}`` struct (Hugging Face, parquet),
    base64 text of an image (recognised by the image header it decodes to, whatever its
    length), or a path. Anything else is an ImageError naming the field: an integer
    under ``bytes`` once made ``bytes(n)`` allocate n zero bytes.
    """
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            raise ImageError(f"must be bytes, got {type(data).__name__}",
                             field=f"{field}.bytes", reason="schema_error")
        if path is not None and not isinstance(path, str):
            raise ImageError(f"must be a path string, got {type(path).__name__}",
                             field=f"{field}.path", reason="schema_error")
        if data:
            return bytes(data)
        value = path
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str) or not value.strip():
        raise ImageError("no image (expected a path, a bytes struct or base64 data)",
                         field=field, reason="missing_image")
    decoded = base64_image(value)
    return decoded if decoded is not None else value


def base64_image(text: str) -> bytes | None:
    """The bytes of ``text`` if it is base64 of an image (by the decoded header), else None.

    Short base64 images are real (a 1x1 PNG is 92 characters), and a path can be long, so
    the length says nothing; the content does."""
    compact = "".join(text.split()) if any(c.isspace() for c in text[:4096]) else text
    if len(compact) < 8 or len(compact) % 4:
        return None
    try:
        head = base64.b64decode(compact[:16], validate=True)
    except (binascii.Error, ValueError):
        return None
    if not head.startswith(_IMAGE_MAGIC):
        return None
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


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


def fit_pixels(data: bytes, max_pixels: int) -> bytes:
    """The image scaled down (aspect kept, Lanczos) to at most ``max_pixels`` pixels, as a
    PNG; unchanged when it already fits. A teacher's pixel budget applied before its
    engine encodes the image: a 12-megapixel photo sent to a model that reads ~1
    megapixel costs upload, base64 and vision-processor time for nothing."""
    image = decode_image(data)
    width, height = image.size
    if width * height <= max_pixels:
        return data
    scale = (max_pixels / (width * height)) ** 0.5
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="PNG")
    return buffer.getvalue()
