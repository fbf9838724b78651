"""SiQ-VL: a frozen SigLIP/SigLIP-2 vision tower, a pixel-shuffle linear projector, and a
Qwen2/Qwen2.5 causal LM, as a transformers model (config, save/load, generate).

Two kinds of module live here:

- the portable ones (``PORTABLE_MODULES``: configuration, modeling, processing, projector,
  loss) import only torch, numpy, pillow, transformers and one another (relatively). A
  saved student carries copies of them and names them in ``auto_map``, so transformers'
  Auto classes load it with ``trust_remote_code=True`` where this toolkit is not installed;
- the toolkit's (``build``, ``student_processor``): model specs, prompt templates, labels.

Importing this package registers the ``siqvl`` model type with transformers' Auto classes
(in this process) and marks the three classes for export, so ``save_pretrained`` writes
their code and ``auto_map`` into the folder.
"""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from distill.train.siqvl.configuration import MODEL_TYPE, SiQVLConfig
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration, SiQVLOutput
from distill.train.siqvl.processing import SiQVLProcessor
from distill.train.siqvl.projector import PixelShuffleProjector, pixel_shuffle

PORTABLE_MODULES = ("configuration", "modeling", "processing", "projector", "loss")

AutoConfig.register(MODEL_TYPE, SiQVLConfig, exist_ok=True)
AutoModelForImageTextToText.register(SiQVLConfig, SiQVLForConditionalGeneration, exist_ok=True)
AutoProcessor.register(SiQVLConfig, SiQVLProcessor, exist_ok=True)
SiQVLConfig.register_for_auto_class()
SiQVLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
SiQVLProcessor.register_for_auto_class()

__all__ = [
    "PORTABLE_MODULES",
    "PixelShuffleProjector",
    "SiQVLConfig",
    "SiQVLForConditionalGeneration",
    "SiQVLOutput",
    "SiQVLProcessor",
    "pixel_shuffle",
]
