"""The embedded default: multi-step visual arithmetic over real handwritten digits.

Questions need several steps: read every digit, then add, subtract, count or compare. Every
item is a pure function of (seed, split, index); its pixels come from the split's own pool
of source scans (``distill.core.digits``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from distill.core.digits import (
    GRID,
    QUESTIONS,
    SOURCE,
    SPLIT_CODES,
    gold_answer,
    load_scans,
    render,
    source_pools,
)
from distill.core.errors import DistillError
from distill.ingest.sources.base import RawItem


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


def iter_digits(config: DigitsConfig) -> Iterator[RawItem]:
    """Every item of every split, in a fixed order."""
    unknown = set(config.categories) - set(QUESTIONS)
    if unknown:
        raise DistillError(f"unknown digits categories {sorted(unknown)}; "
                           f"known: {sorted(QUESTIONS)}")
    pools = source_pools(config.seed)
    images, labels = load_scans()
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
