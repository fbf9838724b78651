"""The embedded default: multi-step visual arithmetic over real handwritten digits.

Images hold 2 to 4 of scikit-learn's bundled 8x8 handwritten digits (real scans, 1,797
of them) in a 2x2 grid. Questions need several steps: read every digit, then add,
subtract, count or compare. The source digit images are split once, by label-stratified
seed, into train / val / test pools, and an item of a split only uses digits of its pool:
no test image shares a source digit scan with training.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from distill.errors import DistillError
from distill.sources.base import RawItem
from schemas import Sample

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


@dataclass(frozen=True)
class DigitsConfig:
    """What to build; every item is a pure function of (seed, split, index)."""

    seed: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"train": 8000, "val": 400, "test": 600}
    )
    categories: tuple[str, ...] = tuple(QUESTIONS)
    min_digits: int = 2
    max_digits: int = 4


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def source_pools(seed: int) -> dict[str, np.ndarray]:
    """Indices of sklearn's digit scans per split: disjoint, stratified by label."""
    _, labels = _load()
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
    images, labels = _load()
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


def iter_digits(config: DigitsConfig) -> Iterator[RawItem]:
    """Every item of every split, in a fixed order."""
    unknown = set(config.categories) - set(QUESTIONS)
    if unknown:
        raise DistillError(f"unknown digits categories {sorted(unknown)}; "
                           f"known: {sorted(QUESTIONS)}")
    pools = source_pools(config.seed)
    images, labels = _load()
    for split, count in config.counts.items():
        pool = pools[split]
        for index in range(count):
            rng = np.random.default_rng([config.seed, SPLIT_CODES[split], index])
            n_digits = int(rng.integers(config.min_digits, config.max_digits + 1))
            cells = sorted(rng.choice(GRID * GRID, size=n_digits, replace=False).tolist())
            chosen = rng.choice(pool, size=n_digits, replace=True)
            category = config.categories[int(rng.integers(len(config.categories)))]
            question, answer_type = QUESTIONS[category]
            digits = [int(labels[i]) for i in chosen]
            buffer = io.BytesIO()
            render([(c, images[i]) for c, i in zip(cells, chosen, strict=True)]).save(
                buffer, format="PNG", optimize=False
            )
            yield RawItem(
                fields={
                    "id": f"digits-{split}-{index:06d}",
                    "question": question,
                    "answer": gold_answer(category, digits),
                    "answer_type": answer_type,
                    "category": category,
                    "source": SOURCE,
                    "split": split,
                    "meta": {"source_indices": [int(i) for i in chosen], "cells": cells},
                },
                file=f"{SOURCE}[{split}]",
                line=index,
                image_bytes=buffer.getvalue(),
            )
