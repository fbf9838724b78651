"""Packed rows with per-document attention compute what padded rows compute (loss and
gradients), and micro-batches cut by a token budget keep every example within budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.train.attention import IMPLEMENTATIONS, packed_attention_forward
from distill.train.batching import (
    Example,
    MicroSplit,
    pack_collate,
    pad_collate,
    padding_fraction,
    round_up,
)
from distill.train.loop import train
from distill.train.metrics import read_metrics
from distill.train.siqvl.modeling import IGNORE_INDEX
from tests.train_support import config, make_dataset, make_ingest, micro_student, random_examples

torch.set_num_threads(1)


def _examples(processor, lengths: list[int], seed: int = 0) -> list[Example]:
    return random_examples(processor, lengths, seed, unlabelled_share=3)


def _loss_and_grads(model, processor, batch, attention: str):
    model.causal_lm().config._attn_implementation = IMPLEMENTATIONS[attention]
    model.zero_grad(set_to_none=True)
    kwargs = batch.attention_kwargs() if attention == "varlen" else {}
    out = model(input_ids=batch.input_ids, pixel_values=processor.normalize(batch.pixel_values),
                position_ids=batch.position_ids, labels=batch.labels, use_cache=False, **kwargs)
    out.loss_sum.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return out.loss_sum.detach(), grads


@pytest.mark.parametrize("attention", ["varlen", "sdpa"])
def test_packed_rows_give_the_loss_and_gradients_of_padded_rows(attention):
    model, processor = micro_student(seed=3)
    model.train()
    model.requires_grad_(True)
    model.vision_tower.requires_grad_(False)
    examples = _examples(processor, [23, 7, 31, 12, 3, 18])
    padded = pad_collate(examples, processor.pad_token_id)
    packed = pack_collate(examples, processor.pad_token_id, capacity=None, multiple=16)
    assert packed.input_ids.shape == (1, 16 * 8)  # one row of 124 tokens, rounded up to 128
    # 28, 12, 36, 17, 8, 23 tokens (image and BOS included), then a padding tail of 4
    assert packed.cu_seqlens.tolist() == [0, 28, 40, 76, 93, 101, 124, 128]
    pad_loss, pad_grads = _loss_and_grads(model, processor, padded, "sdpa")
    pack_loss, pack_grads = _loss_and_grads(model, processor, packed, attention)
    torch.testing.assert_close(pack_loss, pad_loss, rtol=1e-5, atol=1e-4)
    assert pad_grads.keys() == pack_grads.keys() and len(pad_grads) > 10
    for name in pad_grads:
        torch.testing.assert_close(pack_grads[name], pad_grads[name], rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_documents_of_a_packed_row_are_recorded_with_their_padding_tail():
    model, processor = micro_student(seed=0)
    examples = _examples(processor, [4, 10, 2])  # 9, 15 and 7 tokens with the image
    batch = pack_collate(examples, processor.pad_token_id, capacity=24, multiple=8)
    # first fit decreasing into rows of 24: 15 then 9 fill the first, 7 starts the second
    assert batch.input_ids.shape == (2, 24)
    assert batch.cu_seqlens.tolist() == [0, 9, 24, 31, 48]  # 9 | 15 || 7 | 17 of padding
    assert batch.max_seqlen == 17
    assert batch.real_tokens == 31
    starts = (batch.position_ids.flatten() == 0).nonzero().flatten().tolist()
    assert starts == [0, 9, 24, 31]  # every document (and the tail) restarts at 0
    for start in starts:  # a document's first token never becomes a target
        assert batch.labels.flatten()[start] == IGNORE_INDEX


def test_rows_that_share_nothing_are_a_plain_padded_batch():
    """Bucketed micro-batches rarely have two examples that fit in the longest one's row;
    then packing gives exactly the padded batch (one causal attention call, no per-document
    calls)."""
    _, processor = micro_student(seed=0)
    examples = _examples(processor, [20, 17, 23])
    packed = pack_collate(examples, processor.pad_token_id, capacity=0, multiple=8)
    padded = pad_collate(examples, processor.pad_token_id, multiple=8)
    assert packed.cu_seqlens is None and packed.position_ids is None
    assert torch.equal(packed.input_ids, padded.input_ids)
    assert torch.equal(packed.labels, padded.labels)
    assert torch.equal(packed.pixel_values, padded.pixel_values)


def test_per_document_attention_does_not_leak_between_documents():
    """The control: the same packed row read as one document gives other outputs."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 12, 8) for _ in range(3))
    module = torch.nn.Module()
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    apart, _ = packed_attention_forward(module, q, k, v, None, scaling=8 ** -0.5,
                                        cu_seq_lens_q=cu, max_length_q=7)
    together, _ = packed_attention_forward(module, q, k, v, None, scaling=8 ** -0.5)
    torch.testing.assert_close(apart[:, :5], together[:, :5])  # causal: the first is alone
    assert not torch.allclose(apart[:, 5:], together[:, 5:], atol=1e-3)
    second, _ = packed_attention_forward(module, q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], None,
                                         scaling=8 ** -0.5)
    torch.testing.assert_close(apart[:, 5:], second)


@pytest.mark.parametrize("release", ["torch-2.9", "current"])
def test_the_varlen_kernel_is_called_as_each_torch_release_spells_it(release):
    """The GPU kernel's signature changed between releases (2.9: ``is_causal``, no
    ``scale`` or ``enable_gqa``; later: ``window_size``, ``scale``, ``enable_gqa``). Stand-ins
    with each signature, computing exactly what the kernel computes, give the per-document
    result for a grouped-query row with a non-default scale: nothing is lost in adapting."""
    import inspect

    import distill.train.attention as attention

    def old(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False,
            return_aux=None):
        assert is_causal and key.shape[1] == query.shape[1]  # no GQA: heads repeated
        return attention._per_document(query, key, value, cu_seq_q, None)  # 1/sqrt(dim)

    def new(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None,
            scale=None, window_size=(-1, -1), enable_gqa=False):
        assert window_size == (-1, 0) and enable_gqa
        return attention._per_document(query, key, value, cu_seq_q, scale)

    kernel = old if release == "torch-2.9" else new
    params = inspect.signature(kernel).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    spelled = (kernel, causal, "enable_gqa" in params, "scale" in params)
    torch.manual_seed(0)
    q = torch.randn(12, 4, 8)
    k, v = (torch.randn(12, 2, 8) for _ in range(2))
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    got = attention._varlen(spelled, q, k, v, cu, 7, 0.2)
    torch.testing.assert_close(got, attention._per_document(q, k, v, cu, 0.2))


def test_under_autocast_the_kernel_gets_one_dtype(monkeypatch):
    """RoPE leaves q and k in fp32 under bf16 autocast while v is bf16: the kernel must get
    bf16 for all three (on a GPU, that is what lets the flash varlen kernel run at all)."""
    import distill.train.attention as attention

    seen, asked = [], []
    exact = attention._per_document
    monkeypatch.setattr(attention, "_per_document", lambda q, k, v, cu, scale: (
        seen.append({q.dtype, k.dtype, v.dtype}) or exact(q, k, v, cu, scale)))
    # The flash kernel is chosen by the dtype it will get, not by q's fp32 under autocast.
    monkeypatch.setattr(attention, "_flash_varlen", lambda device, dtype: asked.append(dtype))
    torch.manual_seed(0)
    q = torch.randn(1, 4, 12, 8)
    k, v = (torch.randn(1, 2, 12, 8) for _ in range(2))  # grouped query attention
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    want, _ = packed_attention_forward(torch.nn.Module(), q, k, v, None,
                                       cu_seq_lens_q=cu, max_length_q=7)
    with torch.autocast("cpu", torch.bfloat16):
        got, _ = packed_attention_forward(torch.nn.Module(), q, k, v.bfloat16(), None,
                                          cu_seq_lens_q=cu, max_length_q=7)
    assert seen == [{torch.float32}, {torch.bfloat16}]
    assert asked == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)


@pytest.mark.slow  # compiles FlexAttention: ~35 s on the 2-core box
def test_flex_document_mask_matches_padding_in_the_forward_pass():
    """FlexAttention has no backward pass on a CPU in this torch; its forward (the mask it
    builds from the position ids) is checked here, its training speed on the GPU bench."""
    model, processor = micro_student(seed=3)
    model.eval()
    examples = _examples(processor, [9, 4, 14])
    padded = pad_collate(examples, processor.pad_token_id)
    packed = pack_collate(examples, processor.pad_token_id, capacity=None)
    with torch.no_grad():
        model.causal_lm().config._attn_implementation = "sdpa"
        want = model(input_ids=padded.input_ids,
                     pixel_values=processor.normalize(padded.pixel_values),
                     labels=padded.labels).loss_sum
        model.causal_lm().config._attn_implementation = IMPLEMENTATIONS["flex"]
        got = model(input_ids=packed.input_ids,
                    pixel_values=processor.normalize(packed.pixel_values),
                    position_ids=packed.position_ids, labels=packed.labels).loss_sum
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def _lengths(n: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 300, size=n)


def test_token_budget_micro_batches_stay_within_budget_and_keep_every_example():
    lengths = _lengths()
    batch = list(range(len(lengths)))
    split = MicroSplit(tokens=1024, multiple=64)
    micros = split.split(batch, lengths)
    assert sorted(i for m in micros for i in m) == batch
    for micro in micros:
        assert round_up(int(lengths[micro].max()), 64) * len(micro) <= 1024
    # greedy fill: two neighbours never fit together in one budget
    widths = [round_up(int(lengths[m].max()), 64) * len(m) for m in micros]
    assert len(micros) <= 2 * sum(widths) / 1024 + 1
    # a count cap still holds next to the budget
    capped = MicroSplit(size=3, tokens=10_000, multiple=1).split(batch, lengths)
    assert max(len(m) for m in capped) == 3


def test_packed_token_budget_gives_one_row_per_micro_batch_within_budget():
    lengths = _lengths()
    micros = MicroSplit(tokens=2048, multiple=64, packing=True).split(list(range(96)), lengths)
    assert sorted(i for m in micros for i in m) == list(range(96))
    assert all(int(lengths[m].sum()) <= 2048 for m in micros)
    assert len(micros) <= -(-int(lengths.sum()) // 2048) + 1  # first fit decreasing: tight


def test_every_process_gets_as_many_micro_batches():
    lengths = _lengths(24)
    for world_size in (2, 3, 4):
        for split in (MicroSplit(tokens=900, world_size=world_size),
                      MicroSplit(tokens=900, packing=True, world_size=world_size)):
            micros = split.split(list(range(24)), lengths)
            assert len(micros) % world_size == 0
            assert sorted(i for m in micros for i in m) == list(range(24))
    with pytest.raises(ValueError, match="multiple of 4"):
        MicroSplit(tokens=10_000, world_size=4).split([0, 1, 2], lengths)


def test_rounded_widths_bound_the_number_of_shapes_and_count_their_padding():
    lengths = _lengths(512, seed=1)
    plan = [list(range(i, i + 32)) for i in range(0, 512, 32)]
    exact = padding_fraction(plan, lengths, MicroSplit(size=8))
    rounded = padding_fraction(plan, lengths, MicroSplit(size=8, multiple=64))
    assert rounded > exact
    shapes = {tuple(pad_collate(_fake(lengths[m]), 0, 64).input_ids.shape)
              for b in plan for m in MicroSplit(tokens=2048, multiple=64).split(b, lengths)}
    assert all(width % 64 == 0 for _, width in shapes)
    assert len({w for _, w in shapes}) <= 300 // 64 + 1


def _fake(sizes) -> list[Example]:
    return [Example(torch.zeros(int(n), dtype=torch.long), torch.zeros(int(n), dtype=torch.long),
                    torch.zeros((3, 2, 2), dtype=torch.uint8)) for n in sizes]


def test_a_run_packed_by_token_budget_trains_like_a_padded_run(tmp_path):
    """Through train(): packed rows cut by a token budget (~140-token examples, two to a
    300-token row, so four forward passes a step, per-document attention, rounded widths)
    give the losses and weights of one padded forward pass a step."""
    from safetensors.torch import load_file

    data = make_dataset(make_ingest(tmp_path / "ingest", train=16, test=2), tmp_path / "v")
    common = dict(max_steps=3, batch_size=8, lr=1e-3)
    padded = train(config(packing=False, micro_batch_tokens=None, **common), data,
                   tmp_path / "padded")
    packed = train(config(packing=True, micro_batch_tokens=300, pad_multiple=16, **common),
                   data, tmp_path / "packed")
    assert padded.steps == packed.steps == 3
    losses = [[r["loss"] for r in read_metrics(tmp_path / run / "metrics.jsonl")]
              for run in ("padded", "packed")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    a, b = (load_file(str(tmp_path / run / "final" / "model.safetensors"))
            for run in ("padded", "packed"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-5, msg=key)
