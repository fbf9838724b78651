"""Examples, batch plans (length bucketing), and collation (padding or packing).

The plan for an epoch is a pure function of (seed, epoch, lengths): a resumed run, and
every process of a distributed run, computes the same plan without talking to anyone.
A global batch is cut into micro-batches in a fixed order; micro-batch k goes to process
``k % world_size``. The number of label tokens of the whole global batch is known from the
plan, so the loss can be normalized exactly as one process with the whole batch would.

Micro-batches are cut by a token budget (``MicroSplit.tokens``: padded tokens per forward
pass) or by a count of examples. Row widths are rounded up to a multiple (``multiple``, 64 on
a GPU): every new shape pays CUDA/cuBLAS setup once, so a run meets a small, fixed set of
shapes instead of one per step.

Packing puts several examples into one row with position ids that restart at 0 for each
example, and records each row's documents (``Batch.cu_seqlens``). The attention then keeps
the documents apart: per-document kernels (``distill.train.attention``) use ``cu_seqlens``; the
``sdpa`` and ``flex`` attentions of transformers build a block-diagonal causal mask from
the position ids. Either way no example sees another.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.core.images import load_image
from distill.train.data import TrainItem
from distill.train.siqvl.modeling import IGNORE_INDEX
from distill.train.siqvl.student_processor import StudentProcessor


@dataclass(frozen=True)
class Example:
    input_ids: torch.Tensor
    labels: torch.Tensor
    image: torch.Tensor  # uint8 (3, H, W)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class EncodedDataset(Dataset):
    """Tokenized up front (lengths are needed for bucketing); images decoded on demand.

    Examples longer than ``max_length`` are dropped, not truncated: a cut-off rationale
    would teach the student to stop mid-thought. ``dropped`` says how many.
    """

    def __init__(self, items: list[TrainItem], processor: StudentProcessor, max_length: int,
                 cache_images: bool = True) -> None:
        self.processor = processor
        self.items: list[TrainItem] = []
        self.encoded: list[tuple[list[int], list[int]]] = []
        self.dropped = 0
        encoded = processor.encode_many([(item.sample, item.mode, item.target)
                                         for item in items])
        for item, enc in zip(items, encoded, strict=True):
            if len(enc.input_ids) > max_length:
                self.dropped += 1
                continue
            self.items.append(item)
            self.encoded.append((enc.input_ids, enc.labels))
        self.lengths = np.array([len(ids) for ids, _ in self.encoded], dtype=np.int64)
        self.label_counts = np.array(
            [sum(1 for t in labels if t != IGNORE_INDEX) for _, labels in self.encoded],
            dtype=np.int64)
        self._image = lru_cache(maxsize=None)(self._load_image) if cache_images \
            else self._load_image

    def __len__(self) -> int:
        return len(self.items)

    def _load_image(self, index: int) -> torch.Tensor:
        item = self.items[index]
        return self.processor.image_to_uint8(load_image(item.sample.image, item.image_root))

    def __getitem__(self, index: int) -> Example:
        ids, labels = self.encoded[index]
        return Example(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long),
                       self._image(index))


# -- plans ---------------------------------------------------------------------------------
def epoch_plan(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, *,
               bucketing: bool, window: int) -> list[list[int]]:
    """Global batches (lists of example indices) for one epoch; the last partial batch is
    dropped so every step has the same number of examples.

    Bucketing sorts each window of ``window`` batches by length before cutting it into
    batches, then shuffles the batch order: batches hold similar lengths (little padding)
    while the data order stays random at the scale of the window.
    """
    rng = np.random.default_rng([seed, epoch, 104729])
    order = rng.permutation(len(lengths))
    if bucketing:
        span = window * batch_size
        chunks = [order[i:i + span] for i in range(0, len(order), span)]
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [order[i:i + batch_size].tolist()
               for i in range(0, len(order) - batch_size + 1, batch_size)]
    if bucketing:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def split_micro(batch: list[int], lengths: np.ndarray, micro_batch_size: int) -> list[list[int]]:
    """Cut a global batch into micro-batches of similar lengths (sorted, then chunked)."""
    ordered = sorted(batch, key=lambda i: (int(lengths[i]), i))
    return [ordered[i:i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def round_up(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


@dataclass(frozen=True)
class MicroSplit:
    """How a global batch is cut into micro-batches (forward passes) for one process.

    ``tokens`` is a budget of padded tokens per micro-batch (rows x rounded width); without
    it, micro-batches hold ``size`` examples. With ``packing`` and a token budget, each
    micro-batch is one packed row of at most ``tokens`` tokens (first-fit decreasing).
    The number of micro-batches of a step is made a multiple of ``world_size`` (micro-batch
    k goes to process k % world_size), by halving the largest ones.
    """

    size: int | None = None
    tokens: int | None = None
    multiple: int = 1
    packing: bool = False
    world_size: int = 1

    def split(self, batch: list[int], lengths: np.ndarray) -> list[list[int]]:
        if self.tokens is None:
            micros = split_micro(batch, lengths, self.size or len(batch))
        elif self.packing:
            rows = pack_rows([int(lengths[i]) for i in batch], self.tokens)
            micros = [[batch[k] for k in row] for row in rows]
        else:
            micros = self._fill(batch, lengths)
        return _divisible(micros, self.world_size, lengths)

    def _fill(self, batch: list[int], lengths: np.ndarray) -> list[list[int]]:
        """Shortest first, each micro-batch as full as its rounded width allows."""
        micros: list[list[int]] = [[]]
        for index in sorted(batch, key=lambda i: (int(lengths[i]), i)):
            current = micros[-1]
            width = round_up(int(lengths[index]), self.multiple)  # the longest so far
            full = self.size is not None and len(current) >= self.size
            if current and (full or width * (len(current) + 1) > self.tokens):
                micros.append(current := [])
            current.append(index)
        return micros


def _divisible(micros: list[list[int]], world_size: int, lengths: np.ndarray
               ) -> list[list[int]]:
    """Halve the largest micro-batches until every process gets as many as the others."""
    micros = [m for m in micros if m]
    while len(micros) % world_size:
        splittable = [m for m in micros if len(m) > 1]
        if not splittable:
            raise ValueError(f"a batch of {sum(map(len, micros))} example(s) cannot be cut "
                             f"into a multiple of {world_size} micro-batches")
        largest = max(splittable, key=lambda m: (int(lengths[m].sum()), len(m)))
        at = micros.index(largest)
        ordered = sorted(largest, key=lambda i: (int(lengths[i]), i))
        micros[at:at + 1] = [ordered[0::2], ordered[1::2]]
    return micros


def padding_fraction(plan: list[list[int]], lengths: np.ndarray, split: MicroSplit | int
                     ) -> float:
    """Share of padding tokens if this plan is collated by padding (rounded widths)."""
    if isinstance(split, int):
        split = MicroSplit(size=split)
    split = MicroSplit(split.size, split.tokens, split.multiple, False, split.world_size)
    real = padded = 0
    for batch in plan:
        for micro in split.split(batch, lengths):
            sizes = lengths[micro]
            real += int(sizes.sum())
            padded += round_up(int(sizes.max()), split.multiple) * len(micro)
    return 1.0 - real / max(padded, 1)


# -- collation -----------------------------------------------------------------------------
@dataclass
class Batch:
    """Model inputs plus what the loop needs to count (real tokens, label tokens)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor  # uint8 images; normalized on the device
    position_ids: torch.Tensor | None
    real_tokens: int
    label_tokens: int
    num_examples: int
    # Packed rows: the documents of all rows, flattened row after row (each row's padding
    # tail is a document of its own), as cumulative offsets (int32), and the longest.
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0

    def _map(self, fn) -> Batch:
        keep = lambda t: None if t is None else fn(t)  # noqa: E731
        return Batch(keep(self.input_ids), keep(self.labels), keep(self.pixel_values),
                     keep(self.position_ids), self.real_tokens, self.label_tokens,
                     self.num_examples, keep(self.cu_seqlens), self.max_seqlen)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())

    def attention_kwargs(self) -> dict:
        """What the per-document attention needs (transformers' flash-attention names);
        the other attentions ignore these and read ``position_ids``."""
        if self.cu_seqlens is None:
            return {}
        return {"cu_seq_lens_q": self.cu_seqlens, "cu_seq_lens_k": self.cu_seqlens,
                "max_length_q": self.max_seqlen, "max_length_k": self.max_seqlen}


def _counts(examples: list[Example]) -> tuple[int, int]:
    real = sum(len(e) for e in examples)
    labels = sum(int((e.labels != IGNORE_INDEX).sum()) for e in examples)
    return real, labels


def pad_collate(examples: list[Example], pad_id: int, multiple: int = 1) -> Batch:
    """Right padding to the longest example, rounded up to ``multiple``. No attention mask is
    needed: under causal attention no real token can see the padding after it, and padding
    has no labels."""
    width = round_up(max(len(e) for e in examples), multiple)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        input_ids[row, :len(e)] = e.input_ids
        labels[row, :len(e)] = e.labels
    real, label_tokens = _counts(examples)
    return Batch(input_ids, labels, torch.stack([e.image for e in examples]), None, real,
                 label_tokens, len(examples))


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: example positions grouped into rows of at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        for r, free in enumerate(room):
            if size <= free:
                rows[r].append(index)
                room[r] -= size
                break
        else:
            rows.append([index])
            room.append(capacity - size)
    return [sorted(row) for row in rows]


def pack_collate(examples: list[Example], pad_id: int, capacity: int | None,
                 multiple: int = 1) -> Batch:
    """Examples concatenated into rows of at most ``capacity`` tokens (at least the longest
    example's length; 0 means exactly that; None: no limit, one row), per-example position
    ids, rows right-padded to the longest row rounded up to ``multiple``."""
    sizes = [len(e) for e in examples]
    limit = sum(sizes) if capacity is None else max(capacity, max(sizes))
    rows = pack_rows(sizes, limit)
    if len(rows) == len(examples):
        # nothing shares a row: a padded batch is the same, and its attention is one causal
        # call (per-document attention on a CPU costs a call per document)
        return pad_collate(examples, pad_id, multiple)
    width = round_up(max(sum(sizes[i] for i in row) for row in rows), multiple)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    images, documents = [], []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = examples[i]
            n = len(e)
            input_ids[r, at:at + n] = e.input_ids
            labels[r, at:at + n] = e.labels
            # never a target: its left neighbour belongs to another document (a padded row
            # never predicts its first token either)
            labels[r, at] = IGNORE_INDEX
            position_ids[r, at:at + n] = torch.arange(n)
            images.append(e.image)  # in token order: row by row, left to right
            documents.append(n)
            at += n
        position_ids[r, at:] = torch.arange(width - at)
        if width > at:
            documents.append(width - at)  # the padding tail: a document of its own
    real, label_tokens = _counts(examples)
    cu_seqlens = torch.zeros(len(documents) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.tensor(documents).cumsum(0)
    return Batch(input_ids, labels, torch.stack(images), position_ids, real, label_tokens,
                 len(examples), cu_seqlens, max(documents))
