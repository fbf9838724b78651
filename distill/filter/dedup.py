"""Exact and near-duplicate detection over a stream, with bounded memory and no join.

Items arrive in a fixed order and are numbered (their *ordinal*); earlier ones win. Each
item contributes keys: one exact key (its normalised text hash) and one key per LSH band
(``distill.filter.minhash.band_keys``). Two items sharing a key are candidates; an exact
key links them, a band key links them only if their MinHash signatures agree on at least
``threshold`` of their minima (an estimate of their Jaccard similarity). Without that
check, rare chance band collisions between unrelated texts would chain whole groups
together. A linked group (connected component) keeps its earliest item; the others are
its duplicates.

Keys are not held in a dictionary: they are spilled to ``partitions`` files by key, and
each file is sorted on its own. Equal keys land in the same file, so sorting one file
finds all of its collisions. Signatures go to a file too and are read back (memory
mapped) only for the candidate pairs. Memory is one partition plus a few bytes per item
(component label, exact flag), however many items there are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from distill.filter.minhash import fmix64

KEY_DTYPE = np.dtype([("key", "<u8"), ("ordinal", "<i8"), ("exact", "u1")])
_EXACT_SALT = np.uint64(0x6A09E667F3BCC909)
_FLUSH_ROWS = 1 << 18
_CHECK_BATCH = 1 << 11  # candidate pairs whose signatures are mapped at once
ROWS_PER_PARTITION = 1 << 18  # keys sorted at once (~4.5 MB of rows, ~20 MB to sort)


def partitions_for(keys: int) -> int:
    """Enough partitions that none holds more than ROWS_PER_PARTITION keys."""
    return max(1, -(-keys // ROWS_PER_PARTITION))


def read_rows(handle: BinaryIO, rows: np.ndarray, row_type: np.dtype) -> np.ndarray:
    """Rows of a file of fixed-size records, by index, with one ``pread`` each.

    Not a memory map: mapping pages at random indices maps their neighbours too (the
    kernel's fault-around), and a few thousand random reads then hold most of a large
    file in the process's memory."""
    out = np.empty(len(rows), dtype=row_type)
    size = row_type.itemsize
    fd = handle.fileno()
    view = out.view(np.uint8).reshape(len(rows), size)
    for index, row in enumerate(rows.tolist()):
        view[index] = np.frombuffer(os.pread(fd, size, row * size), dtype=np.uint8)
    return out


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

    def __init__(self, workdir: Path | str, partitions: int = 16,
                 threshold: float | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.threshold = threshold
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.count = 0  # one past the largest ordinal seen
        self._signature_rows = 0
        self._signature_width = 0

    @property
    def _signatures_path(self) -> Path:
        return self.workdir / "signatures.bin"

    def add_signatures(self, signatures: np.ndarray) -> None:
        """Signatures of the next ordinals, in order (0, 1, ...): band candidates are
        confirmed against them."""
        if len(signatures) == 0:
            return
        self._signature_width = signatures.shape[1]
        with open(self._signatures_path, "ab") as handle:
            np.ascontiguousarray(signatures, dtype=np.uint32).tofile(handle)
        self._signature_rows += len(signatures)

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
        sources, targets, kinds = [], [], []
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
            kinds.append(is_exact[linked])
            exact[ordinals[linked & (is_exact == 1)]] = True
            path.unlink()
        source = np.concatenate(sources) if sources else np.empty(0, np.int64)
        target = np.concatenate(targets) if targets else np.empty(0, np.int64)
        kind = np.concatenate(kinds) if kinds else np.empty(0, np.uint8)
        keep = self._confirmed(source, target, kind)
        return _components(total, source[keep], target[keep], exact)

    def _confirmed(self, source: np.ndarray, target: np.ndarray, kind: np.ndarray
                   ) -> np.ndarray:
        """Edges to keep: exact ones, and band candidates whose signatures agree enough."""
        keep = np.ones(len(source), dtype=bool)
        if self.threshold is None or self._signature_rows == 0 or len(source) == 0:
            return keep
        candidates = np.flatnonzero(kind == 0)
        row_type = np.dtype((np.uint32, (self._signature_width,)))
        with open(self._signatures_path, "rb") as handle:
            for lo in range(0, len(candidates), _CHECK_BATCH):
                batch = candidates[lo : lo + _CHECK_BATCH]
                left = read_rows(handle, source[batch], row_type)
                right = read_rows(handle, target[batch], row_type)
                keep[batch] = np.mean(left == right, axis=1) >= self.threshold
        self._signatures_path.unlink()
        return keep


def _components(total: int, source: np.ndarray, target: np.ndarray,
                exact: np.ndarray) -> Duplicates:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

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
