"""SiQ-VL as a vLLM model, built from vLLM's own layers and loading the checkpoint's names.

What a saved student holds, and what serves it here:

- ``vision_tower.*``: a SigLIP-2 (NaFlex) or SigLIP tower. vLLM's ``Siglip2Model``
  (``lfm2_siglip2``) or ``SiglipVisionModel`` runs it, with their fused QKV and
  tensor-parallel linears; the names gain the ``vision_model.`` level those classes keep.
  The student always feeds whole square images, so each image is one packed sequence of
  (image_size / patch)^2 patches, flattened (row, col, channel) as transformers does.
- ``projector.linear.*``: pixel shuffle by the configured factor, then one linear layer
  (vLLM's ``ReplicatedLinear``: small, the same on every rank).
- ``language_model.*``: a Qwen2 causal LM, vLLM's own ``Qwen2ForCausalLM`` through
  ``init_vllm_registered_model`` (paged attention, tensor parallelism, tied embeddings).

The prompt is the one the student was trained with: one ``<|image_pad|>`` between
``<|vision_start|>`` and ``<|vision_end|>`` per image (the folder's chat template writes it
from an image part, and vLLM's string-content path puts ``get_placeholder_str`` then a
newline before the text: the same text either way), which the processor below expands into
``num_image_tokens`` slots for the projected features. Images are preprocessed by the
folder's own ``SiQVLProcessor``, so vLLM sees the pixels transformers sees.

The shape of this module follows vLLM's in-tree multimodal models (PaliGemma's layout:
processing info, dummy inputs, multimodal processor, model) as of vLLM 0.32-0.34; it is
imported only inside vLLM's processes, when a SiQ-VL folder is served (``vllm_plugin``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.forward_context import set_forward_context
from vllm.inputs import MultiModalDataDict
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.lfm2_siglip2 import Siglip2Model
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)
from vllm.sequence import IntermediateTensors

from distill.train.siqvl.configuration import SiQVLConfig
from distill.train.siqvl.modeling import patchify
from distill.train.siqvl.processing import (
    IMAGE_TOKEN,
    VISION_END,
    VISION_START,
    SiQVLProcessor,
)
from distill.train.siqvl.projector import pixel_shuffle

SIGLIP2 = "siglip2_vision_model"


# -- inputs: the processor, the dummy inputs for profiling ------------------------------------
class SiQVLProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> SiQVLConfig:
        return self.ctx.get_hf_config(SiQVLConfig)

    def get_hf_processor(self, **kwargs: object) -> SiQVLProcessor:
        # The toolkit's class, not the folder's copy: no trust_remote_code needed to serve.
        return self.ctx.get_hf_processor(SiQVLProcessor, **kwargs)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_num_image_tokens(self) -> int:
        """Every image is resized to the same square: the same number of slots."""
        return self.get_hf_config().num_image_tokens

    def get_mm_max_tokens_per_item(self, seq_len: int,
                                   mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.get_num_image_tokens()}


class SiQVLDummyInputsBuilder(BaseDummyInputsBuilder[SiQVLProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return f"{VISION_START}{IMAGE_TOKEN}{VISION_END}\n" * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int],
                          mm_options: MultiModalDummyOptions) -> MultiModalDataDict:
        size = self.info.get_hf_config().image_size
        return {"image": self._get_dummy_images(width=size, height=size,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image"))}


class SiQVLMultiModalProcessor(BaseMultiModalProcessor[SiQVLProcessingInfo]):
    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]
                              ) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(self, mm_items: MultiModalDataItems,
                            hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        """Each image token of the prompt becomes ``num_image_tokens`` of them, all of
        which take the image's features (as the student's own processor expands it)."""
        image_id = self.info.get_hf_config().image_token_id
        slots = [image_id] * self.info.get_num_image_tokens()
        return [PromptReplacement(
            modality="image", target=[image_id],
            replacement=PromptUpdateDetails.select_token_id(slots, embed_token_id=image_id))]


# -- the model --------------------------------------------------------------------------------
class SiQVLProjector(nn.Module):
    """Pixel shuffle by ``factor``, then one linear map into the LLM's width."""

    def __init__(self, vision_width: int, text_width: int, factor: int,
                 quant_config: QuantizationConfig | None, prefix: str) -> None:
        super().__init__()
        self.factor = factor
        self.linear = ReplicatedLinear(vision_width * factor * factor, text_width, bias=True,
                                       quant_config=quant_config, prefix=f"{prefix}.linear")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected, _ = self.linear(pixel_shuffle(features, self.factor))
        return projected


def vision_tower(config: SiQVLConfig, quant_config: QuantizationConfig | None,
                 prefix: str) -> nn.Module:
    """The tower cut where the student reads it (``vision_feature_layer``, indexed as
    transformers' hidden states: 0 is the embeddings, -1 the post-normed last layer)."""
    vision = config.vision_config
    layer = config.vision_feature_layer
    if layer == -1:
        layers, post_norm = None, True
    else:
        layers = layer if layer >= 0 else vision.num_hidden_layers + 1 + layer
        post_norm = False
    tower = Siglip2Model if vision.model_type == SIGLIP2 else SiglipVisionModel
    return tower(vision, quant_config, num_hidden_layers_override=layers,
                 require_post_norm=post_norm, prefix=prefix)


@MULTIMODAL_REGISTRY.register_processor(SiQVLMultiModalProcessor, info=SiQVLProcessingInfo,
                                        dummy_inputs=SiQVLDummyInputsBuilder)
class SiQVLForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    """The SiQ-VL student in vLLM (module names follow the saved checkpoint's)."""

    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={
        # The tower's attention-pooling head is never read (the student takes the patch
        # features), and vLLM's tower classes keep one more level than transformers 5's.
        "vision_tower.head.": None,
        "vision_tower.": "vision_tower.vision_model.",
    })

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return f"{VISION_START}{IMAGE_TOKEN}{VISION_END}"
        raise ValueError(f"a SiQ-VL student reads images only, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: SiQVLConfig = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        self.vllm_config = vllm_config
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = vision_tower(config, quant_config,
                                             maybe_prefix(prefix, "vision_tower"))
            self.projector = SiQVLProjector(
                config.vision_config.hidden_size, config.text_config.hidden_size,
                config.pixel_shuffle_factor, quant_config, maybe_prefix(prefix, "projector"))
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen2ForCausalLM"])
        self.make_empty_intermediate_tensors = (
            self.language_model.make_empty_intermediate_tensors)

    # -- images -------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) normalized pixels -> (n, patches, vision width)."""
        dtype = next(self.vision_tower.parameters()).dtype
        pixel_values = pixel_values.to(dtype)
        if self.config.vision_config.model_type != SIGLIP2:
            return self.vision_tower(pixel_values)
        patches, shapes = patchify(pixel_values, self.config.patch_size)
        n, length, width = patches.shape
        cu_seqlens = torch.arange(0, (n + 1) * length, length, dtype=torch.int32,
                                  device=pixel_values.device)
        with set_forward_context(None, self.vllm_config):
            features = self.vision_tower(
                pixel_values_packed=patches.reshape(1, n * length, width),
                spatial_shapes=shapes.cpu(), cu_seqlens=cu_seqlens,
                max_seqlen=torch.tensor([length], dtype=torch.int32))
        return features.reshape(n, length, -1)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, list | tuple):
            pixel_values = torch.stack(list(pixel_values))
        return self.projector(self.vision_features(pixel_values))

    # -- text ---------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None,
                **kwargs: object) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors,
                                         inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
