"""SiQVLForConditionalGeneration: vision tower -> pixel-shuffle projector -> Qwen2 LM.

The image placeholder tokens the processor writes into ``input_ids`` are replaced by the
projected image features, in order. The vision tower is frozen and always runs under
``no_grad`` (its activations are never kept for a backward pass).

The loss is computed only where a label exists: the LM head runs on the hidden states of
answer positions, not on every position, and (``loss.py``) a chunk of them at a
time, so the logits over a 150k vocabulary never exist whole.

This file travels with a saved student (``auto_map`` in its config.json), with the three it
imports relatively: it needs only torch and transformers, so
``AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)`` loads the
student where this toolkit is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .configuration import SiQVLConfig
from .loss import CHUNK_ELEMENTS, LossKernel, linear_cross_entropy
from .projector import PatchGridError, PixelShuffleProjector, check_grid

IGNORE_INDEX = -100
# Logits per chunk of the chunked loss (loss.py): one chunk's logits at a time.
LOGITS_CHUNK_ELEMENTS = CHUNK_ELEMENTS


@dataclass
class SiQVLOutput(ModelOutput):
    """``loss`` is the mean over label tokens; ``loss_sum`` and ``num_label_tokens`` let a
    training loop normalize over a whole accumulated (or distributed) batch instead."""

    loss: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None
    num_label_tokens: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None


class SiQVLPreTrainedModel(PreTrainedModel):
    config: SiQVLConfig
    config_class = SiQVLConfig
    base_model_prefix = "siqvl"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer", "Siglip2EncoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    input_modalities = ("image", "text")

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, PixelShuffleProjector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            nn.init.normal_(module.linear.weight, mean=0.0, std=std)
            nn.init.zeros_(module.linear.bias)


class SiQVLForConditionalGeneration(SiQVLPreTrainedModel, GenerationMixin):
    """The student VLM. ``language_model`` may be wrapped by peft (LoRA) during training.

    ``loss_kernel`` picks how the loss goes through the LM head (``loss.py``); the
    training loop sets it per stage.
    """

    loss_kernel: LossKernel = "chunked"

    def __init__(self, config: SiQVLConfig, vision_tower: PreTrainedModel | None = None,
                 language_model: PreTrainedModel | None = None) -> None:
        """Build from the config; pass ``vision_tower`` / ``language_model`` already loaded
        (pretrained weights) to use them instead of building random ones."""
        super().__init__(config)
        if config.image_size % config.patch_size:
            raise PatchGridError(
                f"image_size {config.image_size} is not a multiple of the vision tower's "
                f"patch size {config.patch_size}"
            )
        check_grid(config.patch_grid**2, config.pixel_shuffle_factor)
        self.vision_tower = vision_tower or AutoModel.from_config(config.vision_config)
        self.projector = PixelShuffleProjector(
            config.vision_config.hidden_size, config.text_config.hidden_size,
            config.pixel_shuffle_factor,
        )
        self.language_model = language_model or AutoModelForCausalLM.from_config(
            config.text_config)
        self.vision_tower.requires_grad_(False)
        self.post_init()
        for part in (self.vision_tower, self.language_model):
            # a part loaded on its own keeps its attention choice; never leave it unset
            if part.config._attn_implementation is None:
                part.config._attn_implementation = "sdpa"

    # -- plumbing expected by transformers / peft --------------------------------------
    def causal_lm(self) -> PreTrainedModel:
        """The Qwen2ForCausalLM itself, under any peft wrapper (LoRA layers live inside)."""
        lm = self.language_model
        get_base = getattr(lm, "get_base_model", None)
        return get_base() if callable(get_base) else lm

    def get_input_embeddings(self) -> nn.Module:
        return self.causal_lm().get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.causal_lm().set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.causal_lm().get_output_embeddings()

    def train(self, mode: bool = True) -> SiQVLForConditionalGeneration:
        super().train(mode)
        self.vision_tower.eval()  # frozen: no dropout, no statistics, ever
        return self

    # -- images -------------------------------------------------------------------------
    @property
    def is_siglip2(self) -> bool:
        return self.config.vision_config.model_type == "siglip2_vision_model"

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_images, C, H, W) -> (n_images, patches, vision width), frozen, no autograd."""
        tower = self.vision_tower
        dtype = next(tower.parameters()).dtype
        pixel_values = pixel_values.to(dtype)
        want_hidden = self.config.vision_feature_layer != -1
        with torch.no_grad():
            if self.is_siglip2:
                patches, shapes = patchify(pixel_values, self.config.patch_size)
                mask = torch.ones(patches.shape[:2], dtype=torch.long, device=patches.device)
                out = tower(pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes,
                            output_hidden_states=want_hidden)
            else:
                out = tower(pixel_values=pixel_values, output_hidden_states=want_hidden)
        if want_hidden:
            return out.hidden_states[self.config.vision_feature_layer]
        return out.last_hidden_state

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_images, C, H, W) -> (n_images, num_image_tokens, LLM hidden size)."""
        return self.projector(self.vision_features(pixel_values))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with every image placeholder replaced by image features, in order."""
        embeds = self.get_input_embeddings()(input_ids)
        slots = input_ids == self.config.image_token_id
        n_slots = int(slots.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_slots:
                raise ValueError(f"input_ids hold {n_slots} image tokens but no pixel_values")
            return embeds
        features = self.encode_images(pixel_values)
        if features.shape[0] * features.shape[1] != n_slots:
            raise ValueError(
                f"{features.shape[0]} image(s) give {features.shape[0] * features.shape[1]} "
                f"feature tokens but input_ids hold {n_slots} image placeholder tokens "
                f"(id {self.config.image_token_id}); was the prompt built by another processor?"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))

    # -- forward / loss -----------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> SiQVLOutput:
        """With ``labels``: the loss over label tokens only (logits are not returned).

        Packed rows (several samples in one row) pass ``position_ids`` that restart at 0
        for each sample and no ``attention_mask``, with ``use_cache=False``; the attention
        keeps the samples apart: ``sdpa``/``flex`` from a block-diagonal mask transformers
        builds from the position ids, the per-document attention of ``distill.train.attention``
        from the ``cu_seq_lens_*`` keyword arguments (``Batch.attention_kwargs``).
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values)
        lm = self.causal_lm()
        if labels is not None:
            use_cache = False
        out = lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                       position_ids=position_ids, past_key_values=past_key_values,
                       use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state
        if labels is None:
            return SiQVLOutput(logits=lm.lm_head(hidden), past_key_values=out.past_key_values)
        loss_sum, count = label_loss(hidden, labels, lm.lm_head, self.loss_kernel)
        return SiQVLOutput(loss=loss_sum / count.clamp(min=1), loss_sum=loss_sum,
                           num_label_tokens=count)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Generate from a (left-padded) batch: the prompt ids, then the new tokens, as
        transformers' generate returns them (the answer is ``out[:, input_ids.shape[1]:]``).

        The prompt, image features included, is embedded once and handed to the LLM's own
        ``generate``, which keeps a KV cache and derives position ids from the mask. EOS and
        padding default to the folder's generation config (``save_student`` writes them).
        """
        embeds = self.embed(input_ids, pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        defaults = self.generation_config
        kwargs.setdefault("eos_token_id", defaults.eos_token_id)
        kwargs.setdefault("pad_token_id", defaults.pad_token_id)
        new_tokens = self.causal_lm().generate(inputs_embeds=embeds,
                                               attention_mask=attention_mask, **kwargs)
        return torch.cat([input_ids, new_tokens.to(input_ids.device)], dim=1)


def label_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module,
               kernel: LossKernel = "chunked") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross entropy over positions with a label, and their count."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if getattr(lm_head, "bias", None) is not None:
        kernel = "plain"  # the fused kernels take a bias-free head (Qwen2's has none)
    loss_sum = linear_cross_entropy(hidden[:, :-1][keep], lm_head.weight, targets[keep],
                                    kernel, LOGITS_CHUNK_ELEMENTS)
    return loss_sum, keep.sum()


def patchify(pixel_values: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SigLIP-2 (NaFlex) input: (n, C, H, W) -> (n, patches, patch*patch*C) row-major,
    each patch flattened as (row, col, channel), plus the (rows, cols) grid per image."""
    n, channels, height, width = pixel_values.shape
    rows, cols = height // patch, width // patch
    x = pixel_values.reshape(n, channels, rows, patch, cols, patch)
    x = x.permute(0, 2, 4, 3, 5, 1).reshape(n, rows * cols, patch * patch * channels)
    shapes = torch.tensor([[rows, cols]] * n, dtype=torch.long, device=pixel_values.device)
    return x, shapes

