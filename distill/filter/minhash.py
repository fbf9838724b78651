"""MinHash signatures and LSH band keys, vectorised with numpy.

Why not one MinHash object per text (datasketch): that costs a Python-level hash call
per shingle and a Python object per text. Here a whole batch of texts becomes one byte
array; words, word hashes, shingle hashes and the ``num_perm`` minima are computed with
array operations, so the cost per shingle is a few machine instructions.

The steps, for a batch of texts:

1. normalise: Unicode lower-case (Python), then every ASCII byte that is not a letter
   or digit becomes a space (a lookup table); words are runs of non-space bytes, so
   punctuation and spacing never change a shingle;
2. word hash: a polynomial hash mod 2**64 over each word's bytes, read off prefix sums
   (``H[end] - H[start]`` scaled by the inverse power of the start);
3. shingle hash: ``SHINGLE_WORDS`` consecutive word hashes combined polynomially, then
   avalanched (MurmurHash3's finaliser); a text shorter than one shingle is one shingle;
4. MinHash: ``num_perm`` affine permutations ``a*x + b mod 2**32`` (odd ``a``) of each
   shingle hash and the minimum per text, in bounded slices of shingles;
5. LSH: ``rows`` consecutive minima make a band; a band key mixes them with the band's
   index and an optional per-text salt (a scope, e.g. the image hash).

Everything is deterministic: seeds are fixed, nothing depends on the process (Python's
``hash`` is salted per process and is never used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

VERSION = "1"
NUM_PERM = 128
SHINGLE_WORDS = 5
_SEED = 20240617
_TEXT_BATCH_BYTES = 1 << 18  # bytes of text hashed at once (power tables stay small)
_SHINGLE_SLICE = 8192  # shingles x num_perm values live at once (4 MiB at 128 perms)
_EMPTY = np.uint32(0xFFFFFFFF)

_P = np.uint64(0x100000001B3)  # byte multiplier (odd, so invertible mod 2**64)
_Q = np.uint64(0x9E3779B97F4A7C15)  # word multiplier inside a shingle
_R = np.uint64(0xC2B2AE3D27D4EB4F)  # word multiplier for the exact text hash

# ASCII letters and digits keep their lower-case byte; other ASCII bytes become a space;
# bytes >= 128 (parts of UTF-8 letters) are kept as word bytes.
_LUT = np.arange(256, dtype=np.uint8)
for _byte in range(128):
    _char = chr(_byte)
    if not _char.isalnum():
        _LUT[_byte] = 32
    elif _char.isupper():
        _LUT[_byte] = ord(_char.lower())
_SPACE = np.uint8(32)


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit flips each output bit with p=1/2."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xFF51AFD7ED558CCD)
        values = values ^ (values >> np.uint64(33))
        values = values * np.uint64(0xC4CEB9FE1A85EC53)
        return values ^ (values >> np.uint64(33))


def _inverse_mod_2_64(value: np.uint64) -> np.uint64:
    """Multiplicative inverse of an odd number mod 2**64 (Newton's iteration)."""
    inverse = value
    with np.errstate(over="ignore"):
        for _ in range(6):
            inverse = inverse * (np.uint64(2) - value * inverse)
    return inverse


@lru_cache(maxsize=4)
def _powers(base: int, length: int) -> np.ndarray:
    """base**i mod 2**64 for i < length (cached; grown in powers of two)."""
    size = 1 << max(10, (length - 1).bit_length())
    table = np.full(size, np.uint64(base), dtype=np.uint64)
    table[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(table, dtype=np.uint64)


def _power_table(base: np.uint64, length: int) -> np.ndarray:
    size = 1 << max(10, (length - 1).bit_length())
    return _powers(int(base), size)[:length]


@dataclass(frozen=True)
class WordHashes:
    """Per-word hashes of a batch of texts, grouped by text."""

    hashes: np.ndarray  # (W,) uint64
    counts: np.ndarray  # (N,) words per text
    firsts: np.ndarray  # (N,) index of each text's first word in ``hashes``


def word_hashes(texts: Sequence[str]) -> WordHashes:
    """Normalise and split a batch of texts into hashed words (see the module notes)."""
    encoded = [text.lower().encode("utf-8") for text in texts]
    lengths = np.fromiter((len(data) for data in encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b" ".join(encoded), dtype=np.uint8) if encoded else np.empty(0, np.uint8)
    mapped = _LUT[data]
    length = len(mapped)
    if length == 0:
        empty = np.zeros(len(texts), dtype=np.int64)
        return WordHashes(np.empty(0, np.uint64), empty, empty)
    is_word = mapped != _SPACE
    before = np.empty(length, dtype=bool)
    before[0] = True
    before[1:] = ~is_word[:-1]
    after = np.empty(length, dtype=bool)
    after[-1] = True
    after[:-1] = ~is_word[1:]
    starts = np.flatnonzero(is_word & before)
    ends = np.flatnonzero(is_word & after) + 1
    with np.errstate(over="ignore"):
        prefix = np.zeros(length + 1, dtype=np.uint64)
        np.cumsum((mapped.astype(np.uint64) + np.uint64(1)) * _power_table(_P, length),
                  out=prefix[1:])
        inverse = _power_table(_inverse_mod_2_64(_P), length)
        hashes = (prefix[ends] - prefix[starts]) * inverse[starts]
        hashes ^= (ends - starts).astype(np.uint64) * _Q
    text_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=text_starts[1:])
    owner = np.searchsorted(text_starts, starts, side="right") - 1
    counts = np.bincount(owner, minlength=len(texts)).astype(np.int64)
    firsts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(counts[:-1], out=firsts[1:])
    return WordHashes(hashes, counts, firsts)


def _shingle_hashes(words: WordHashes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes, shingles per text): every run of ``size`` consecutive words."""
    counts = words.counts
    per_text = np.where(counts >= size, counts - size + 1, np.minimum(counts, 1))
    total = int(per_text.sum())
    if total == 0:
        return np.empty(0, np.uint64), per_text
    offsets = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(per_text[:-1], out=offsets[1:])
    first = np.repeat(words.firsts, per_text) + (np.arange(total) - np.repeat(offsets, per_text))
    last = np.repeat(words.firsts + counts - 1, per_text)
    combined = np.zeros(total, dtype=np.uint64)
    weight = np.uint64(1)
    with np.errstate(over="ignore"):
        for offset in range(size):
            index = first + offset
            present = index <= last
            term = words.hashes[np.minimum(index, last)] * weight
            combined += np.where(present, term, np.uint64(0))
            weight = weight * _Q
        width = np.minimum(last - first + 1, size).astype(np.uint64)
        return fmix64(combined ^ (width << np.uint64(56))), per_text


def text_hashes(words: WordHashes) -> np.ndarray:
    """One 64-bit hash of each text's whole normalised word sequence (exact dedup)."""
    out = np.zeros(len(words.counts), dtype=np.uint64)
    if len(words.hashes) == 0:
        return fmix64(out)
    position = np.arange(len(words.hashes)) - np.repeat(words.firsts, words.counts)
    with np.errstate(over="ignore"):
        weighted = words.hashes * _power_table(_R, int(position.max()) + 1)[position]
        nonempty = words.counts > 0
        out[nonempty] = np.add.reduceat(weighted, words.firsts[nonempty])
        return fmix64(out ^ words.counts.astype(np.uint64))


class MinHasher:
    """Signatures of ``num_perm`` minima over word ``shingle_words``-grams."""

    def __init__(self, num_perm: int = NUM_PERM, shingle_words: int = SHINGLE_WORDS,
                 seed: int = _SEED) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self._a = (rng.integers(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2)
                   + np.uint32(1))
        self._b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint64).astype(np.uint32)

    @property
    def config(self) -> dict[str, int | str]:
        """What the signatures depend on (part of the scoring cache key)."""
        return {"version": VERSION, "num_perm": self.num_perm,
                "shingle_words": self.shingle_words}

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(signatures (N, num_perm) uint32, exact text hashes (N,) uint64).

        A text with no words has an all-0xFFFFFFFF signature: callers skip it for
        near-duplicate search (``has_words``).
        """
        signatures = np.full((len(texts), self.num_perm), _EMPTY, dtype=np.uint32)
        exact = np.zeros(len(texts), dtype=np.uint64)
        for lo, hi in _byte_batches(texts):
            words = word_hashes(texts[lo:hi])
            exact[lo:hi] = text_hashes(words)
            shingles, per_text = _shingle_hashes(words, self.shingle_words)
            self._minima(shingles, per_text, signatures[lo:hi])
        return signatures, exact

    def _minima(self, shingles: np.ndarray, per_text: np.ndarray, out: np.ndarray) -> None:
        """out[t] = min(out[t], min over text t's shingles of each permutation).

        Values are laid out permutation-major (num_perm, shingles) so that numpy's inner
        loops run over contiguous shingles: about 4x faster than shingle-major."""
        if len(shingles) == 0:
            return
        keys = (shingles >> np.uint64(32)).astype(np.uint32)
        owner = np.repeat(np.arange(len(per_text)), per_text)
        text_starts = np.zeros(len(per_text), dtype=np.int64)
        np.cumsum(per_text[:-1], out=text_starts[1:])
        text_starts = text_starts[per_text > 0]
        buffer = np.empty((self.num_perm, _SHINGLE_SLICE), dtype=np.uint32)
        a, b = self._a[:, None], self._b[:, None]
        for lo in range(0, len(keys), _SHINGLE_SLICE):
            hi = min(lo + _SHINGLE_SLICE, len(keys))
            values = buffer[:, : hi - lo]
            np.multiply(a, keys[None, lo:hi], out=values)
            values += b
            inner = text_starts[(text_starts > lo) & (text_starts < hi)]
            segments = np.concatenate(([lo], inner))
            minima = np.minimum.reduceat(values, segments - lo, axis=1)
            texts = owner[segments]
            out[texts] = np.minimum(out[texts], minima.T)


def has_words(signatures: np.ndarray) -> np.ndarray:
    """Texts that had at least one shingle (an empty text must not match other empties)."""
    return signatures[:, 0] != _EMPTY


def _byte_batches(texts: Sequence[str]) -> list[tuple[int, int]]:
    batches, lo, size = [], 0, 0
    for index, text in enumerate(texts):
        size += len(text) + 1
        if size >= _TEXT_BATCH_BYTES:
            batches.append((lo, index + 1))
            lo, size = index + 1, 0
    if lo < len(texts):
        batches.append((lo, len(texts)))
    return batches


_BAND_SALTS = fmix64(np.arange(1, 1025, dtype=np.uint64) * np.uint64(0xA24BAED4963EE407))
_ROW_WEIGHTS = fmix64(np.arange(1, 1025, dtype=np.uint64) * np.uint64(0x9FB21C651E98DF25)) | 1


def band_keys(signatures: np.ndarray, bands: int, rows: int,
              salt: np.ndarray | None = None) -> np.ndarray:
    """(N, bands) uint64 LSH keys: texts sharing a key collide in that band.

    ``salt`` (N,) uint64 scopes the keys: texts with different salts never collide.
    """
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows needs more than "
                         f"{signatures.shape[1]} permutations")
    grid = signatures[:, : bands * rows].astype(np.uint64).reshape(-1, bands, rows)
    with np.errstate(over="ignore"):
        keys = (grid * _ROW_WEIGHTS[:rows]).sum(axis=2, dtype=np.uint64)
        keys += _BAND_SALTS[:bands]
        if salt is not None:
            keys ^= fmix64(salt.astype(np.uint64))[:, None]
    return fmix64(keys)


def collision_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Chance that two texts of Jaccard ``similarity`` share at least one band."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int = NUM_PERM,
               false_positive_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) that best separate pairs above ``threshold`` from pairs below it.

    Minimises the weighted area of false positives (similarity < threshold but colliding)
    plus false negatives (similarity >= threshold but never colliding).
    """
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(collision_probability(below, bands, rows), below)
            fn = np.trapezoid(1.0 - collision_probability(above, bands, rows), above)
            cost = false_positive_weight * fp + (1.0 - false_positive_weight) * fn
            if cost < best_cost - 1e-12:
                best, best_cost = (bands, rows), cost
    return best


def jaccard_estimate(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Share of equal minima: an unbiased estimate of the Jaccard similarity."""
    return np.mean(left == right, axis=-1)
