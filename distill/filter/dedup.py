"""Exact and near-duplicate detection over a stream, with bounded memory and no join.

Items arrive in a fixed order and are numbered (their *ordinal*); earlier ones win. Each
item contributes keys: one exact key (its normalised text hash) and one key per LSH band
(``distill.filter.minhash.band_keys``). Two items sharing any key are linked; a linked
group (connected component) keeps its earliest item, the others are its duplicates.

Keys are not held in a dictionary: they are spilled to ``partitions`` files by key, and
each file is sorted on its own. Equal keys land in the same file, so sorting one file
finds all of its collisions. Memory is one partition plus two small arrays per item
(component label, exact flag), however many items there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.filter.minhash import fmix64

KEY_DTYPE = np.dtype([("key", "<u8"), ("ordinal", "<i8"), ("exact", "u1")])
_EXACT_SALT = np.uint64(0x6A09E667F3BCC909)
_FLUSH_ROWS = 1 << 18


def exact_keys(text_hashes: np.ndarray, salt: np.ndarray | None = None) -> np.ndarray:
    """The exact-duplicate key: the text hash, scoped by ``salt`` like band keys are."""
    keys = text_hashes.astype(np.uint64) ^ _EXACT_SALT
    if salt is not None:
        keys = keys ^ fmix64(salt.astype(np.uint64))
    return fmix64(keys)


@dataclass(frozen=True)
class Duplicates:
    """For every ordinal: the earliest item of its group, and whether it shares its exact
    text with an earlier item (else it is only a near duplicate)."""

    representative: np.ndarray  # (N,) int64
    exact: np.ndarray  # (N,) bool
    groups: int  # groups of two or more items

    def is_duplicate(self, ordinal: int) -> bool:
        return int(self.representative[ordinal]) != ordinal


class DuplicateFinder:
    """Collects keys of items in order, then resolves duplicate groups."""

    def __init__(self, workdir: Path | str, partitions: int = 16) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.count = 0  # one past the largest ordinal seen

    def add(self, ordinals: np.ndarray, exact: np.ndarray | None = None,
            bands: np.ndarray | None = None) -> None:
        """Keys of items ``ordinals``: ``exact`` (N,) and/or ``bands`` (N, B) uint64."""
        ordinals = np.asarray(ordinals, dtype=np.int64)
        if len(ordinals) == 0:
            return
        self.count = max(self.count, int(ordinals.max()) + 1)
        if exact is not None:
            self._push(exact, ordinals, 1)
        if bands is not None and bands.size:
            self._push(bands.reshape(-1), np.repeat(ordinals, bands.shape[1]), 0)

    def _push(self, keys: np.ndarray, ordinals: np.ndarray, exact: int) -> None:
        rows = np.empty(len(keys), dtype=KEY_DTYPE)
        rows["key"] = keys
        rows["ordinal"] = ordinals
        rows["exact"] = exact
        self._buffer.append(rows)
        self._buffered += len(rows)
        if self._buffered >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        rows = np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        part = (rows["key"] % np.uint64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        rows, part = rows[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.partitions + 1))
        for index in range(self.partitions):
            lo, hi = bounds[index], bounds[index + 1]
            if hi > lo:
                with open(self._path(index), "ab") as handle:
                    rows[lo:hi].tofile(handle)

    def _path(self, index: int) -> Path:
        return self.workdir / f"keys-{index:04d}.bin"

    def resolve(self, count: int | None = None) -> Duplicates:
        """Link items that share a key; each group's earliest item represents it."""
        self._flush()
        total = max(self.count, count or 0)
        sources, targets = [], []
        exact = np.zeros(total, dtype=bool)
        for index in range(self.partitions):
            path = self._path(index)
            if not path.exists():
                continue
            rows = np.fromfile(path, dtype=KEY_DTYPE)
            order = np.lexsort((rows["ordinal"], rows["key"]))
            keys, ordinals, is_exact = (rows["key"][order], rows["ordinal"][order],
                                        rows["exact"][order])
            starts = np.empty(len(keys), dtype=bool)
            starts[:1] = True
            starts[1:] = keys[1:] != keys[:-1]
            head = ordinals[starts][np.cumsum(starts) - 1]
            linked = ~starts & (ordinals != head)
            sources.append(head[linked])
            targets.append(ordinals[linked])
            exact[ordinals[linked & (is_exact == 1)]] = True
            path.unlink()
        return _components(total, sources, targets, exact)


def _components(total: int, sources: list[np.ndarray], targets: list[np.ndarray],
                exact: np.ndarray) -> Duplicates:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    source = np.concatenate(sources) if sources else np.empty(0, np.int64)
    target = np.concatenate(targets) if targets else np.empty(0, np.int64)
    if len(source) == 0:
        return Duplicates(np.arange(total, dtype=np.int64), exact, 0)
    graph = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)),
                       shape=(total, total)).tocsr()
    _, labels = connected_components(graph, directed=False)
    earliest = np.full(labels.max() + 1, total, dtype=np.int64)
    np.minimum.at(earliest, labels, np.arange(total, dtype=np.int64))
    representative = earliest[labels]
    sizes = np.bincount(labels)
    return Duplicates(representative, exact, int(np.count_nonzero(sizes > 1)))
