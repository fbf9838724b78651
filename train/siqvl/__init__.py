"""SiQ-VL: a frozen SigLIP/SigLIP-2 vision tower, a pixel-shuffle linear projector, and a
Qwen2/Qwen2.5 causal LM, as a transformers-compatible model (config, save/load, generate).

Importing this package registers the ``siqvl`` model type with transformers' Auto classes.
"""

from distill.train.siqvl.configuration import SiQVLConfig
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration, SiQVLOutput
from distill.train.siqvl.processing import SiQVLProcessor
from distill.train.siqvl.projector import PixelShuffleProjector, pixel_shuffle

__all__ = [
    "PixelShuffleProjector",
    "SiQVLConfig",
    "SiQVLForConditionalGeneration",
    "SiQVLOutput",
    "SiQVLProcessor",
    "pixel_shuffle",
]
