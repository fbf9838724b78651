"""Bucketing plans, padding and packing: packed rows must compute what padded rows do."""

from __future__ import annotations

import numpy as np
import torch

from distill.train.batching import (
    Example,
    MicroSplit,
    epoch_plan,
    pack_collate,
    pack_rows,
    pad_collate,
    padding_fraction,
    split_micro,
)
from tests.train_support import micro_student, random_examples

torch.set_num_threads(1)


def _examples(processor, lengths: list[int], seed: int = 0) -> list[Example]:
    return random_examples(processor, lengths, seed, unlabelled_share=2)


def test_packed_and_padded_batches_give_the_same_logits_and_loss():
    model, processor = micro_student(seed=1)
    model.eval()
    examples = _examples(processor, [7, 19, 3, 12])
    padded = pad_collate(examples, processor.pad_token_id)
    packed = pack_collate(examples, processor.pad_token_id, capacity=40)
    assert packed.input_ids.shape[0] < len(examples)  # several examples share a row
    with torch.no_grad():
        pad_logits = model(input_ids=padded.input_ids,
                           pixel_values=processor.normalize(padded.pixel_values),
                           use_cache=False).logits
        pack_logits = model(input_ids=packed.input_ids,
                            pixel_values=processor.normalize(packed.pixel_values),
                            position_ids=packed.position_ids, use_cache=False).logits
        # locate every example in the packed rows by its position ids restarting at 0
        for row in range(packed.input_ids.shape[0]):
            starts = (packed.position_ids[row] == 0).nonzero().flatten().tolist()
            for start in starts:
                n = next((len(e) for e in examples
                          if torch.equal(packed.input_ids[row, start:start + len(e)],
                                         e.input_ids)), None)
                if n is None:
                    continue  # the padding tail of the row
                index = next(i for i, e in enumerate(examples)
                             if torch.equal(packed.input_ids[row, start:start + n], e.input_ids))
                torch.testing.assert_close(pack_logits[row, start:start + n],
                                           pad_logits[index, :n], atol=1e-5, rtol=1e-4)
        pad_loss = model(input_ids=padded.input_ids,
                         pixel_values=processor.normalize(padded.pixel_values),
                         labels=padded.labels).loss_sum
        pack_loss = model(input_ids=packed.input_ids,
                          pixel_values=processor.normalize(packed.pixel_values),
                          position_ids=packed.position_ids, labels=packed.labels).loss_sum
    torch.testing.assert_close(pack_loss, pad_loss, atol=1e-4, rtol=1e-5)
    assert packed.real_tokens == padded.real_tokens == sum(len(e) for e in examples)
    assert packed.label_tokens == padded.label_tokens


def test_packing_without_position_ids_would_leak_across_examples():
    """The control: the same packed row read as one sequence gives different logits."""
    model, processor = micro_student(seed=1)
    model.eval()
    examples = _examples(processor, [6, 9])
    packed = pack_collate(examples, processor.pad_token_id, capacity=64)
    assert packed.input_ids.shape[0] == 1
    with torch.no_grad():
        pixels = processor.normalize(packed.pixel_values)
        isolated = model(input_ids=packed.input_ids, pixel_values=pixels,
                         position_ids=packed.position_ids, use_cache=False).logits
        leaking = model(input_ids=packed.input_ids, pixel_values=pixels, use_cache=False).logits
    second = (packed.position_ids[0] == 0).nonzero().flatten()[1]
    assert not torch.allclose(isolated[0, second:], leaking[0, second:], atol=1e-3)


def test_pack_rows_fits_capacity_and_keeps_every_example():
    lengths = [30, 5, 17, 22, 8, 40, 3]
    rows = pack_rows(lengths, capacity=40)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 40 for row in rows)
    assert len(rows) == 4  # 40 | 30+8 | 22+17 | 5+3 -> first fit decreasing


def test_bucketing_cuts_padding_and_plans_are_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=512)
    plain = epoch_plan(lengths, 16, seed=0, epoch=0, bucketing=False, window=8)
    bucketed = epoch_plan(lengths, 16, seed=0, epoch=0, bucketing=True, window=8)
    assert sorted(i for b in bucketed for i in b) == list(range(512))
    assert padding_fraction(bucketed, lengths, 16) < padding_fraction(plain, lengths, 16) / 3
    assert bucketed == epoch_plan(lengths, 16, seed=0, epoch=0, bucketing=True, window=8)
    assert bucketed != epoch_plan(lengths, 16, seed=0, epoch=1, bucketing=True, window=8)
    micros = split_micro(bucketed[0], lengths, 4)
    assert [len(m) for m in micros] == [4, 4, 4, 4]
    assert sorted(i for m in micros for i in m) == sorted(bucketed[0])


class _Lengths:
    """What plan_steps reads of an encoded dataset: its size and lengths."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths, self.label_counts = lengths, lengths // 2

    def __len__(self) -> int:
        return len(self.lengths)


def test_a_continued_run_takes_up_the_data_order_where_its_parent_stopped():
    from distill.train.config import TrainConfig
    from distill.train.loop import plan_steps
    from distill.train.runtime import Runtime

    dataset = _Lengths(np.arange(40) % 7 + 5)  # 10 batches of 4 an epoch
    runtime, split = Runtime(torch.device("cpu"), torch.float32), MicroSplit(size=4)
    config = TrainConfig(stage="cot", batch_size=4, seed=3, bucketing=False, max_steps=16)
    parent = plan_steps(dataset, config, runtime, split, 0, 16)
    continued = plan_steps(dataset, config.model_copy(update={"data_start": 6}), runtime, split,
                           0, 10)
    assert [p.micro for p in continued] == [p.micro for p in parent[6:16]]  # across the epoch
    assert [p.epoch for p in continued][3:5] == [0, 1]
    assert continued[0].micro != parent[0].micro
