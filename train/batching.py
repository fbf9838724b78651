"""Examples, batch plans (length bucketing), and collation (padding or packing).

The plan for an epoch is a pure function of (seed, epoch, lengths): a resumed run, and
every process of a distributed run, computes the same plan without talking to anyone.
A global batch is cut into micro-batches in a fixed order; micro-batch k goes to process
``k % world_size``. The number of label tokens of the whole global batch is known from the
plan, so the loss can be normalized exactly as one process with the whole batch would.

Packing puts several examples into one row with position ids that restart at 0 for each
example and no attention mask: with ``use_cache=False`` transformers builds a
block-diagonal causal mask from those position ids, so examples never see each other.
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
from distill.train.siqvl.processing import SiQVLProcessor


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

    def __init__(self, items: list[TrainItem], processor: SiQVLProcessor, max_length: int,
                 cache_images: bool = True) -> None:
        self.processor = processor
        self.items: list[TrainItem] = []
        self.encoded: list[tuple[list[int], list[int]]] = []
        self.dropped = 0
        for item in items:
            enc = processor.encode(item.sample, item.mode, item.target)
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


def padding_fraction(plan: list[list[int]], lengths: np.ndarray, micro_batch_size: int) -> float:
    """Share of padding tokens if this plan is collated by padding."""
    real = padded = 0
    for batch in plan:
        for micro in split_micro(batch, lengths, micro_batch_size):
            sizes = lengths[micro]
            real += int(sizes.sum())
            padded += int(sizes.max()) * len(micro)
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

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.input_ids), move(self.labels), move(self.pixel_values),
                     move(self.position_ids), self.real_tokens, self.label_tokens,
                     self.num_examples)

    def pin_memory(self) -> Batch:
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(pin(self.input_ids), pin(self.labels), pin(self.pixel_values),
                     pin(self.position_ids), self.real_tokens, self.label_tokens,
                     self.num_examples)

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())


def _counts(examples: list[Example]) -> tuple[int, int]:
    real = sum(len(e) for e in examples)
    labels = sum(int((e.labels != IGNORE_INDEX).sum()) for e in examples)
    return real, labels


def pad_collate(examples: list[Example], pad_id: int) -> Batch:
    """Right padding to the longest example. No attention mask is needed: under causal
    attention no real token can see the padding after it, and padding has no labels."""
    width = max(len(e) for e in examples)
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


def pack_collate(examples: list[Example], pad_id: int, capacity: int) -> Batch:
    """Examples concatenated into rows of at most ``capacity`` tokens (at least the longest
    example's length; 0 means exactly that), per-example position ids, rows right-padded to
    the longest row."""
    rows = pack_rows([len(e) for e in examples], max(capacity, max(len(e) for e in examples)))
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    images = []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = examples[i]
            n = len(e)
            input_ids[r, at:at + n] = e.input_ids
            labels[r, at:at + n] = e.labels
            position_ids[r, at:at + n] = torch.arange(n)
            images.append(e.image)  # in token order: row by row, left to right
            at += n
        position_ids[r, at:] = torch.arange(width - at)
    real, label_tokens = _counts(examples)
    return Batch(input_ids, labels, torch.stack(images), position_ids, real, label_tokens,
                 len(examples))
