"""Decontamination: keep eval items (and near copies of them) out of training data.

An item is contaminated when, against any item of the given eval sets:

* ``image``: its image has the same bytes (sha256) -- for a VLM the picture is the item;
* ``question``: its normalised question (+ choices) text is the same;
* ``question_near``: its question text is a near duplicate (MinHash over word 3-grams,
  candidates from LSH, confirmed by the signatures' estimated Jaccard similarity).

Question texts that many eval items share ("What is the sum of the digits?") are
templates, not item identities; they are left out of text matching (counted in the
report), otherwise every training item of that template would be dropped.

Eval sets are small next to training data, so their index lives in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from distill.core.evalsets import EvalSet
from distill.filter.minhash import MinHasher, band_keys, has_words, lsh_params
from distill.filter.policy import Decontamination
from distill.schemas.dataset_manifest import eval_set_label

VERSION = "1"
QUESTION_SHINGLE_WORDS = 3


def question_text(question: str, choices: Sequence[str] | None) -> str:
    return question if not choices else question + "\n" + "\n".join(choices)


@dataclass
class EvalIndex:
    settings: Decontamination
    hashes: list[str]
    labels: list[str]
    images: set[str] = field(default_factory=set)
    questions: set[int] = field(default_factory=set)
    near_keys: dict[int, list[int]] = field(default_factory=dict)  # band key -> rows
    signatures: np.ndarray | None = None
    templates: int = 0
    items: int = 0
    bands: int = 0
    rows: int = 0

    def __post_init__(self) -> None:
        self.hasher = MinHasher(shingle_words=QUESTION_SHINGLE_WORDS)

    @property
    def empty(self) -> bool:
        return self.items == 0

    def check(self, samples: Sequence[tuple[str, str, Sequence[str] | None]]) -> list[str]:
        """Contamination of each (image sha256, question, choices): a CONTAMINATION value."""
        out = ["none"] * len(samples)
        if self.empty:
            return out
        texts = [question_text(q, c) for _, q, c in samples]
        signatures, text_hashes = self.hasher.signatures(texts)
        keys = None
        if self.settings.near_threshold is not None and self.near_keys:
            keys = band_keys(signatures, self.bands, self.rows)
        for index, (image, _, _) in enumerate(samples):
            if self.settings.image and image in self.images:
                out[index] = "image"
            elif self.settings.question and int(text_hashes[index]) in self.questions:
                out[index] = "question"
            elif keys is not None and has_words(signatures[index : index + 1])[0] \
                    and self._near(signatures[index], keys[index]):
                out[index] = "question_near"
        return out

    def _near(self, signature: np.ndarray, keys: np.ndarray) -> bool:
        assert self.signatures is not None and self.settings.near_threshold is not None
        candidates = {row for key in keys for row in self.near_keys.get(int(key), ())}
        return any(float(np.mean(self.signatures[row] == signature))
                   >= self.settings.near_threshold for row in candidates)


def build_eval_index(eval_sets: Iterable[EvalSet], settings: Decontamination) -> EvalIndex:
    """Index every eval item's image hash and (non-template) question text."""
    eval_sets = list(eval_sets)
    index = EvalIndex(settings, [s.hash for s in eval_sets],
                      [eval_set_label(s.hash, s.spec) for s in eval_sets])
    texts: list[str] = []
    for eval_set in eval_sets:
        for sample in eval_set.samples:
            index.images.add(sample.image.sha256)
            texts.append(question_text(sample.question, sample.choices))
    index.items = len(texts)
    if not texts or not (settings.question or settings.near_threshold is not None):
        return index
    signatures, text_hashes = index.hasher.signatures(texts)
    counts = Counter(int(h) for h in text_hashes)
    templates = {h for h, n in counts.items() if n >= settings.template_min_count}
    index.templates = len(templates)
    keep = np.array([int(h) not in templates for h in text_hashes], dtype=bool)
    keep &= has_words(signatures)
    if settings.question:
        index.questions = {int(h) for h, k in zip(text_hashes, keep, strict=True) if k}
    if settings.near_threshold is not None:
        index.bands, index.rows = lsh_params(settings.near_threshold, index.hasher.num_perm)
        index.signatures = signatures
        rows = np.flatnonzero(keep)
        keys = band_keys(signatures[rows], index.bands, index.rows)
        for row, row_keys in zip(rows, keys, strict=True):
            for key in row_keys:
                index.near_keys.setdefault(int(key), []).append(int(row))
    return index
