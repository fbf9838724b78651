"""Summed next-token cross entropy through the LM head, without the whole logits tensor.

With a 151,936-word vocabulary the logits of the label tokens are the largest activation
of a step (16k answer tokens x 152k x 4 bytes = 10 GiB in fp32). Three kernels compute
the same sum (``SiQVLForConditionalGeneration.loss_kernel``):

* ``plain``: ``lm_head`` then ``F.cross_entropy``; the reference, and the fastest when the
  logits are small.
* ``chunked``: a torch autograd function that walks the tokens in chunks and, while it has
  a chunk's logits, computes their gradients for the hidden states and the head's weight
  (the idea of Liger's fused linear cross entropy, in plain torch). Only one chunk's
  logits ever exist, and the backward pass only scales the stored gradients: no logits
  are recomputed. When all the tokens fit in one chunk it takes the plain path (the same
  work, and the very numbers of the plain loss: a small run trains bit for bit as before).
* ``liger``: Liger's Triton ``LigerFusedLinearCrossEntropyLoss`` (GPU only; the optional
  extra ``[liger]``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossKernel = Literal["plain", "chunked", "liger"]
# Logits per chunk (tokens x vocabulary): 2**28 fp32 values = 1 GiB.
CHUNK_ELEMENTS = 2**28


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         kernel: LossKernel = "chunked",
                         chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """sum_i CE(hidden[i] @ weight.T, targets[i]) for (tokens, width) hidden states."""
    if hidden.shape[0] == 0:
        return (hidden.sum() + weight.sum()) * 0.0  # keeps the graph for an empty micro-batch
    dtype = _compute_dtype(hidden, weight)
    if kernel == "plain":
        return F.cross_entropy(F.linear(hidden.to(dtype), weight.to(dtype)).float(), targets,
                               reduction="sum")
    if kernel == "liger":
        try:  # optional; inside try so a travelling copy of this file never requires it
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError as exc:
            raise ImportError("the liger loss kernel needs liger-kernel (pip install "
                              "'distill-vlm[liger]')") from exc

        return LigerFusedLinearCrossEntropyLoss(reduction="sum")(
            weight.to(dtype), hidden.to(dtype), targets)
    chunk = max(1, chunk_elements // weight.shape[0])
    if hidden.shape[0] <= chunk:  # one chunk: the plain path is the same work, same numbers
        return linear_cross_entropy(hidden, weight, targets, "plain")
    return ChunkedLinearCrossEntropy.apply(hidden.to(dtype), weight.to(dtype), targets, chunk)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul would run in: autocast's, else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients chunk by chunk in the forward pass; backward scales them."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]
            t = targets[start:start + chunk]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (want_hidden or want_weight):
                continue
            grad = torch.softmax(logits, dim=-1)  # d loss / d logits = softmax - one_hot
            grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            grad = grad.to(hidden.dtype)
            if want_hidden:
                grad_hidden[start:start + chunk] = grad @ weight
            if want_weight:
                grad_weight += (grad.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None
