"""The loss through the LM head: the chunked kernel equals the plain one (loss and both
gradients), and the loop picks and wires each kernel per stage and device."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.core.errors import MissingExtraError
from distill.train.layers import Layers, apply_kernel_layers, resolve_layers
from distill.train.runtime import Runtime
from distill.train.siqvl.loss import linear_cross_entropy
from tests.train_support import config, micro_student

torch.set_num_threads(1)


def _inputs(tokens=37, width=24, vocab=301, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, width, generator=g).to(dtype).requires_grad_(True)
    weight = (0.2 * torch.randn(vocab, width, generator=g)).to(dtype).requires_grad_(True)
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    return hidden, weight, targets


def _run(kernel, hidden, weight, targets, chunk_elements=2**28):
    hidden.grad = weight.grad = None
    loss = linear_cross_entropy(hidden, weight, targets, kernel, chunk_elements)
    (2.5 * loss).backward()  # a scale, as the loop's 1 / label tokens: backward must apply it
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


@pytest.mark.parametrize("chunk_tokens", [1, 5, 37, 1000])
def test_chunked_loss_and_gradients_equal_the_plain_ones(chunk_tokens):
    hidden, weight, targets = _inputs()
    plain = _run("plain", hidden, weight, targets)
    chunked = _run("chunked", hidden, weight, targets, chunk_tokens * weight.shape[0])
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(chunked[1], plain[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked[2], plain[2], rtol=1e-5, atol=1e-6)
    reference = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    torch.testing.assert_close(plain[0], reference.detach())
    if chunk_tokens >= hidden.shape[0]:  # one chunk: the plain numbers, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(chunked, plain, strict=True))


def test_chunked_loss_in_bf16_stays_close_to_fp32():
    hidden, weight, targets = _inputs(dtype=torch.bfloat16)
    fp32 = [t.detach().float().requires_grad_(True) for t in (hidden, weight)]
    want = _run("plain", fp32[0], fp32[1], targets)
    got = _run("chunked", hidden, weight, targets, 8 * weight.shape[0])
    assert got[1].dtype == got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], want[0], rtol=2e-2, atol=0.5)
    torch.testing.assert_close(got[1].float(), want[1], rtol=5e-2, atol=2e-2)
    torch.testing.assert_close(got[2].float(), want[2], rtol=5e-2, atol=2e-2)


def test_a_frozen_head_gets_no_gradient_and_no_gradient_is_built_without_grad():
    hidden, weight, targets = _inputs()
    weight.requires_grad_(False)
    loss = linear_cross_entropy(hidden, weight, targets, "chunked", 3 * weight.shape[0])
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    with torch.no_grad():
        cold = linear_cross_entropy(hidden, weight, targets, "chunked", 3 * weight.shape[0])
    torch.testing.assert_close(cold, loss.detach())


def test_the_student_loss_is_the_same_with_every_kernel(monkeypatch):
    import distill.train.siqvl.modeling as modeling

    model, processor = micro_student(seed=2)
    # chunks of 7 label tokens: the chunked kernel really runs (60 label tokens here)
    monkeypatch.setattr(modeling, "LOGITS_CHUNK_ELEMENTS", 7 * model.config.text_config.vocab_size)
    ids = torch.tensor([[1] + [processor.image_token_id] * 4 + list(range(20, 60))] * 2)
    labels = ids.clone()
    labels[:, :10] = -100
    pixels = torch.randn(2, 3, 32, 32)
    results = {}
    for kernel in ("plain", "chunked"):
        model.zero_grad()
        model.loss_kernel = kernel
        out = model(input_ids=ids, pixel_values=pixels, labels=labels)
        out.loss_sum.backward()
        results[kernel] = (out.loss_sum.detach(), model.projector.linear.weight.grad.clone(),
                           model.causal_lm().lm_head.weight.grad.clone())
    for a, b in zip(results["plain"], results["chunked"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


class _Dataset:
    lengths = np.array([40, 60, 80, 100] * 4)


def _layers(monkeypatch, *, device: str, liger_installed: bool, **fields) -> Layers:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        object() if liger_installed else None) if name == "liger_kernel" else real(name, *a))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # resolve_layers only reads the device's kind: no CUDA device is touched here
    return resolve_layers(config(**fields), Runtime(torch.device(device), dtype), _Dataset(), 4)


def test_the_loop_picks_the_loss_kernel_per_stage_and_device(monkeypatch):
    cpu = _layers(monkeypatch, device="cpu", liger_installed=True, llm="frozen", stage="align")
    assert cpu.loss_kernel == "chunked" and not cpu.liger
    stage1 = _layers(monkeypatch, device="cuda", liger_installed=True, llm="frozen",
                     stage="align")
    assert stage1.loss_kernel == "liger" and stage1.liger
    stage2 = _layers(monkeypatch, device="cuda", liger_installed=True, llm="full")
    assert stage2.loss_kernel == "chunked"  # Liger's CE measured slower when the LLM trains
    missing = _layers(monkeypatch, device="cuda", liger_installed=False, llm="frozen",
                      stage="align")
    assert missing.loss_kernel == "chunked" and not missing.liger
    forced = _layers(monkeypatch, device="cuda", liger_installed=True, llm="full",
                     loss_kernel="liger")
    assert forced.loss_kernel == "liger"
    # GPU defaults of the other layers
    assert stage2.split.tokens == 16384 and stage2.split.multiple == 64 and stage2.packing
    assert stage2.split.packing and stage2.pack_max_tokens == 16384
    assert stage2.autocast and not stage1.autocast  # fp32 masters of a fully trained LLM
    # A CPU packs only above 10% padding after bucketing: bucketed, these lengths leave
    # none; in random order they leave plenty.
    assert cpu.split.tokens is None and cpu.split.multiple == 1 and not cpu.packing
    unbucketed = _layers(monkeypatch, device="cpu", liger_installed=False, bucketing=False)
    assert unbucketed.packing and unbucketed.padding_after_bucketing > 0.1
    assert unbucketed.pack_max_tokens == 0  # rows no longer than the longest example


def test_liger_without_its_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", None)
    layers = _layers(monkeypatch, device="cpu", liger_installed=False, loss_kernel="liger")
    model, _ = micro_student()
    with pytest.raises(MissingExtraError, match=r"distill-vlm\[liger\]"):
        apply_kernel_layers(model, layers)


def test_the_liger_kernel_gets_the_head_the_states_and_a_sum(monkeypatch):
    """Liger's Triton kernel cannot run on a CPU; a stand-in module records how it is called
    and computes the plain loss, so the wiring (argument order, reduction) is checked."""
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, reduction: str) -> None:
            super().__init__()
            calls.append(reduction)

        def forward(self, weight, hidden, targets):
            calls.append((weight.shape, hidden.shape, targets.shape))
            return F.cross_entropy(hidden @ weight.T, targets, reduction="sum")

    module = types.ModuleType("liger_kernel.transformers")
    module.LigerFusedLinearCrossEntropyLoss = Recorder
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", module)
    hidden, weight, targets = _inputs()
    got = _run("liger", hidden, weight, targets)
    want = _run("plain", hidden, weight, targets)
    assert calls == ["sum", (weight.shape, hidden.shape, targets.shape)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
