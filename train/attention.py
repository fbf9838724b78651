"""Attention for packed rows: each document attends only to itself, without a dense mask.

A packed row holds several examples; ``Batch.cu_seqlens`` gives their boundaries (the
flash-attention convention: cumulative offsets over the rows laid end to end). Three ways
to keep them apart, chosen by ``TrainConfig.attention``:

* ``varlen`` (this module, registered with transformers as ``distill_varlen``): on a CUDA
  device in bf16/fp16, PyTorch's own flash-attention varlen kernel
  (``torch.nn.attention.varlen.varlen_attn``, no flash-attn wheel needed), which computes
  only the diagonal blocks; anywhere else, one causal SDPA call per document, which is
  exact and has gradients on every device (the CPU path the tests check against padding).
* ``flex``: transformers' FlexAttention with a document BlockMask built from the position
  ids (block-sparse; compiled by torch, no backward on a CPU in torch 2.13).
* ``sdpa``: transformers' SDPA with a dense block-diagonal boolean mask built from the
  position ids (works everywhere; attention costs the whole row's length squared).

Rows that are not packed (no ``cu_seqlens``) get plain causal SDPA under every choice.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

VARLEN = "distill_varlen"
# TrainConfig.attention -> the attention implementation name transformers dispatches on
IMPLEMENTATIONS = {"varlen": VARLEN, "flex": "flex_attention", "sdpa": "sdpa"}


@functools.cache
def _varlen_kernel():
    """PyTorch's varlen flash attention and how its signature spells causal, GQA and the
    softmax scale (it changed between releases: torch 2.9's has neither ``enable_gqa`` nor
    ``scale``), or None where this torch has none."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params


def _flash_varlen(device: torch.device, dtype: torch.dtype):
    """The flash varlen kernel where it runs (CUDA, half precision, a torch that has it),
    else None. ``dtype`` is what the kernel will get: under bf16 autocast q and k arrive in
    fp32 and are cast first (asking with their own dtype sent the H200's stage 2 to the
    per-document loop: 14k instead of 67k tokens/s)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return None
    return _varlen_kernel()


def varlen_available(device: torch.device) -> bool:
    return device.type == "cuda" and _varlen_kernel() is not None


def packed_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             dropout: float = 0.0, scaling: float | None = None,
                             cu_seq_lens_q: torch.Tensor | None = None,
                             max_length_q: int | None = None, **kwargs
                             ) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (batch, heads, length, dim) in, (batch, length,
    heads, dim) out."""
    if kwargs.get("sliding_window") is not None:
        raise ValueError("packed attention does not implement sliding windows")
    if cu_seq_lens_q is None:  # not packed: causal attention over each (right-padded) row
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout,
                                      scaling=scaling, is_causal=True)
    if dropout:
        raise ValueError("packed attention does not implement attention dropout")
    batch, heads, length, dim = query.shape
    # Under autocast RoPE leaves q and k in fp32 while v is bf16: one dtype for the kernel
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) \
        else value.dtype
    flat = [t.to(dtype).transpose(1, 2).reshape(batch * length, t.shape[1], dim)
            for t in (query, key, value)]  # (tokens, heads, dim)
    kernel = _flash_varlen(query.device, dtype)
    if kernel:
        out = _varlen(kernel, *flat, cu_seq_lens_q, int(max_length_q), scaling)
    else:
        out = _per_document(*flat, cu_seq_lens_q, scaling)
    return out.reshape(batch, length, heads, dim), None


def _varlen(kernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
            longest: int, scale: float | None) -> torch.Tensor:
    varlen_attn, causal, native_gqa, takes_scale = kernel
    gqa = q.shape[1] != k.shape[1]
    extra = dict(causal)
    if takes_scale:
        extra["scale"] = scale
    elif scale is not None:  # older kernels always scale by 1/sqrt(dim): fold in the rest
        q = q * (scale * q.shape[-1] ** 0.5)
    if gqa and native_gqa:
        extra["enable_gqa"] = True
    elif gqa:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    cu = cu.to(device=q.device, dtype=torch.int32)
    return varlen_attn(q, k, v, cu, cu, longest, longest, **extra)


def _per_document(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
                  scale: float | None) -> torch.Tensor:
    """One causal SDPA call per document: exact, any device, with gradients."""
    bounds = cu.tolist()
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, tokens, dim)
    gqa = q.shape[0] != k.shape[0]
    parts = [F.scaled_dot_product_attention(q[:, s:e], k[:, s:e], v[:, s:e], is_causal=True,
                                            scale=scale, enable_gqa=gqa)
             for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s]
    return torch.cat(parts, dim=1).transpose(0, 1)


AttentionInterface.register(VARLEN, packed_attention_forward)
