"""The projector: pixel shuffle by a factor r, then one linear layer into the LLM's width.

Pixel shuffle trades sequence length for width: each r x r block of neighbouring patch
features becomes one token of r*r times the width, so the LLM sees r^2 fewer image tokens
for the same pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PatchGridError(ValueError):
    """The vision tower's patch grid cannot be pixel-shuffled by the configured factor.

    A plain ValueError: the model depends on torch and transformers only; the toolkit's
    builder (``build.py``) turns it into a user error naming where the config came from."""


def check_grid(num_patches: int, factor: int) -> int:
    """Side of the square patch grid; refuses grids that are not square or not divisible."""
    if factor < 1:
        raise PatchGridError(f"pixel shuffle factor must be >= 1, got {factor}")
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise PatchGridError(f"pixel shuffle needs a square patch grid; got {num_patches} patches")
    if side % factor:
        raise PatchGridError(
            f"the vision tower's patch grid is {side}x{side}, which is not divisible by the "
            f"pixel shuffle factor {factor}: choose a factor that divides {side}, or an image "
            "size / patch size whose grid it divides"
        )
    return side


def pixel_shuffle(features: torch.Tensor, factor: int) -> torch.Tensor:
    """(batch, side*side, dim) -> (batch, (side/r)^2, dim*r*r), blocks taken row-major."""
    batch, num_patches, dim = features.shape
    side = check_grid(num_patches, factor)
    if factor == 1:
        return features
    out_side = side // factor
    blocks = features.reshape(batch, out_side, factor, out_side, factor, dim)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5)  # (batch, row, col, dy, dx, dim)
    return blocks.reshape(batch, out_side * out_side, factor * factor * dim)


class PixelShuffleProjector(nn.Module):
    """Pixel shuffle then a single linear map: vision width * r^2 -> LLM hidden size."""

    def __init__(self, vision_hidden_size: int, text_hidden_size: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.linear = nn.Linear(vision_hidden_size * factor * factor, text_hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        shuffled = pixel_shuffle(features, self.factor)
        return self.linear(shuffled.to(self.linear.weight.dtype))
