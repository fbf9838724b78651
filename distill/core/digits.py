"""The embedded default data's pixels: scikit-learn's bundled handwritten digit scans.

Images hold 2 to 4 of scikit-learn's 8x8 handwritten digits (real scans, 1,797 of them)
in a 2x2 grid. The source scans are split once, by label-stratified seed, into train /
val / test pools, and an item of a split only uses digits of its pool: no test image
shares a source digit scan with training.

Core, not ingest: the digits items are built by ingest (``distill.ingest.sources.digits``),
but the built-in teachers (generate), the vision tower's stage 0 and the tiny tokenizer's
corpus (train) read the same pools and questions, and no stage may import another.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from PIL import Image

from distill.schemas import Sample

SOURCE = "sklearn-digits"
GRID = 2  # cells per side
CELL = 8  # sklearn digit size in pixels
SCALE = 2  # upscale factor: a 32x32 image
IMAGE_SIZE = GRID * CELL * SCALE
POOL_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

QUESTIONS = {
    "sum": ("What is the sum of the digits in the image?", "number"),
    "max_minus_min": (
        "What is the largest digit in the image minus the smallest digit?",
        "number",
    ),
    "count_even": ("How many of the digits in the image are even?", "number"),
    "sum_is_even": ("Is the sum of the digits in the image an even number?", "yes_no"),
}


@lru_cache(maxsize=1)
def load_scans() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def source_pools(seed: int) -> dict[str, np.ndarray]:
    """Indices of sklearn's digit scans per split: disjoint, stratified by label."""
    _, labels = load_scans()
    rng = np.random.default_rng([seed, 7919])
    pools: dict[str, list[int]] = {split: [] for split in POOL_FRACTIONS}
    for label in range(10):
        indices = np.flatnonzero(labels == label)
        rng.shuffle(indices)
        n_train = round(len(indices) * POOL_FRACTIONS["train"])
        n_val = round(len(indices) * POOL_FRACTIONS["val"])
        pools["train"].extend(indices[:n_train])
        pools["val"].extend(indices[n_train : n_train + n_val])
        pools["test"].extend(indices[n_train + n_val :])
    return {split: np.sort(np.array(ids, dtype=np.int64)) for split, ids in pools.items()}


def digit_images(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images in 0..16 ink units, labels) of the given source scans."""
    images, labels = load_scans()
    return images[indices], labels[indices]


def digits_of(sample: Sample) -> list[int]:
    """The true digits of an ingested digits item, from the labels of its source scans
    (what a perfect reader would see; fixtures build correct rationales from it)."""
    _, labels = digit_images(np.array(sample.meta["source_indices"]))
    return [int(label) for label in labels]


def render(cells: list[tuple[int, np.ndarray]]) -> Image.Image:
    """Dark ink on white, each digit in its grid cell (cell index 0..3, row-major)."""
    canvas = np.zeros((GRID * CELL, GRID * CELL), dtype=np.float32)
    for cell, image in cells:
        row, col = divmod(cell, GRID)
        canvas[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = image
    pixels = (255 - np.round(canvas * 255 / 16)).clip(0, 255).astype(np.uint8)
    pixels = np.kron(pixels, np.ones((SCALE, SCALE), dtype=np.uint8))
    return Image.fromarray(pixels, mode="L")


def gold_answer(category: str, digits: list[int]) -> str:
    if category == "sum":
        return str(sum(digits))
    if category == "max_minus_min":
        return str(max(digits) - min(digits))
    if category == "count_even":
        return str(sum(1 for d in digits if d % 2 == 0))
    if category == "sum_is_even":
        return "yes" if sum(digits) % 2 == 0 else "no"
    raise ValueError(f"unknown digits category {category!r}; known: {sorted(QUESTIONS)}")


# --- where a digits CoT answer goes wrong ------------------------------------------------------
# A wrong chain-of-thought answer either read the image wrong (the digits it lists are not the
# image's) or read it right and worked the question wrong (a slip in the running sum). The
# split told issue 22's seeds apart (reading steady, arithmetic moving with the seed) and
# says what a second distillation round fixed (bench/RESULTS.md).

_LISTED = re.compile(r"digits: ([^.\n]*)")
ERROR_KINDS = ("misread", "arithmetic", "other")


def listed_digits(output: str) -> list[int] | None:
    """The digits an answer says it sees ("The image shows 3 digits: 6, 7 and 3.")."""
    match = _LISTED.search(output)
    return [int(d) for d in re.findall(r"\d", match.group(1))] if match else None


def error_kind(sample: Sample, output: str) -> str:
    """Why a wrong answer to a digits item is wrong: ``misread`` (the listed digits are not
    the image's), ``arithmetic`` (the right digits, a wrong result), ``other`` (no digit
    list: a direct answer, or an unparseable one)."""
    listed = listed_digits(output)
    if listed is None:
        return "other"
    return "misread" if listed != digits_of(sample) else "arithmetic"
