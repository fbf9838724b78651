"""SiQVLProcessor: text and images in, the SiQ-VL student's model inputs out.

This file travels: ``save_student`` copies it into the student's folder, where
``AutoProcessor.from_pretrained(folder, trust_remote_code=True)`` loads it with nothing but
torch, numpy, pillow and transformers installed. So it imports nothing of the toolkit.

The student's input format, for the chat template and for every engine that serves it:

- each image is one ``<|image_pad|>`` token in the text, between ``<|vision_start|>`` and
  ``<|vision_end|>``, then a newline, then the question (the chat template writes this from
  an image part followed by a text part: ``multimodal_chat_template``);
- the processor expands each ``<|image_pad|>`` into ``num_image_tokens`` copies: the slots
  the model fills with that image's projected features;
- the image is converted to RGB, resized to ``image_size`` x ``image_size`` (bicubic),
  scaled to [0, 1], then normalized by ``image_mean`` / ``image_std``.

``include_system`` and ``prompts`` record how the toolkit asked the student in training
(whether a system turn was sent; which prompt file each mode used): the prompt text itself
is the caller's, so a caller that wants the trained format reads them here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

IMAGE_TOKEN = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
# The first line of a template this module wrapped (so it is never wrapped twice).
TEMPLATE_MARK = "{#- SiQ-VL: image parts become vision tokens, text parts their text -#}"


def multimodal_chat_template(text_template: str, image_placeholder: str) -> str:
    """A chat template that takes structured content as well as plain strings.

    A message whose content is a list of parts (``{"type": "image"}``, ``{"type":
    "image_url", ...}``, ``{"type": "text", "text": ...}``, as transformers' processors and
    OpenAI-style servers send them) is flattened first: each image part becomes
    ``image_placeholder``, each text part its text, the parts joined by a newline. The
    messages then go through ``text_template`` unchanged, so a message with plain string
    content renders exactly as the tokenizer's own template renders it: the format the
    student was trained on.
    """
    if text_template.startswith(TEMPLATE_MARK):
        return text_template
    flatten = (
        "{%- set flat = namespace(messages=[]) -%}\n"
        "{%- for message in messages -%}\n"
        "{%- if message['content'] is string or message['content'] is none -%}\n"
        "{%- set flat.messages = flat.messages + [message] -%}\n"
        "{%- else -%}\n"
        "{%- set parts = namespace(texts=[]) -%}\n"
        "{%- for part in message['content'] -%}\n"
        "{%- if part['type'] in ('image', 'image_url', 'image_pil', 'image_embeds') -%}\n"
        "{%- set parts.texts = parts.texts + [" + _jinja_string(image_placeholder) + "] -%}\n"
        "{%- elif part['type'] == 'text' -%}\n"
        "{%- set parts.texts = parts.texts + [part['text']] -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- set flat.messages = flat.messages + [dict(message, content=parts.texts | join('\\n'))]"
        " -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- set messages = flat.messages -%}\n"
    )
    return f"{TEMPLATE_MARK}\n{flatten}{text_template}"


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SiQVLProcessor(ProcessorMixin):
    """The tokenizer, the image preprocessing and the chat template of a SiQ-VL student.

    Its settings are plain constructor arguments, saved in ``processor_config.json``; the
    chat template is saved in ``chat_template.jinja`` (the tokenizer's files beside them).
    """

    def __init__(self, tokenizer=None, chat_template: str | None = None,
                 image_size: int = 224, num_image_tokens: int = 49,
                 image_mean: Sequence[float] = DEFAULT_MEAN,
                 image_std: Sequence[float] = DEFAULT_STD,
                 image_token: str = IMAGE_TOKEN, vision_start: str = VISION_START,
                 vision_end: str = VISION_END, include_system: bool = True,
                 prompts: dict[str, str] | None = None, **kwargs) -> None:
        # Plain (not keyword-only) arguments: ProcessorMixin.from_pretrained passes the saved
        # settings back only to the positional-or-keyword parameters of __init__.
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.image_token = image_token
        self.vision_start = vision_start
        self.vision_end = vision_end
        self.include_system = bool(include_system)
        self.prompts = dict(prompts or {})
        super().__init__(tokenizer, chat_template=chat_template, **kwargs)
        missing = [t for t in (image_token, vision_start, vision_end)
                   if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(f"the tokenizer has no token(s) {missing}; a SiQ-VL tokenizer "
                             "needs Qwen2's vision tokens")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # -- identity ------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.image_token))

    @property
    def image_placeholder(self) -> str:
        """What stands for one image in the prompt text, before expansion."""
        return f"{self.vision_start}{self.image_token}{self.vision_end}"

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    # -- text ----------------------------------------------------------------------------
    def expand_image_tokens(self, ids: list[int]) -> list[int]:
        """Each image token of a tokenized prompt becomes ``num_image_tokens`` of them."""
        image_id = self.image_token_id
        out: list[int] = []
        for token in ids:
            if token == image_id:
                out.extend([image_id] * self.num_image_tokens)
            else:
                out.append(token)
        return out

    # -- images --------------------------------------------------------------------------
    def image_to_uint8(self, image) -> torch.Tensor:
        """RGB, resized to the square input size: a (3, H, W) uint8 tensor (cheap to cache)."""
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        size = self.image_size
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (n, 3, H, W) -> the tower's input: scaled to [0, 1], then mean/std."""
        mean = torch.tensor(self.image_mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=images.device).view(1, 3, 1, 1)
        return ((images.float() / 255.0 - mean) / std).to(dtype)

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        """(n, 3, image_size, image_size) float32 pixel values for n images."""
        return self.normalize(torch.stack([self.image_to_uint8(im) for im in images]))

    # -- the processor call --------------------------------------------------------------
    def __call__(self, images=None, text=None, videos=None, audio=None,
                 **kwargs) -> BatchFeature:
        """Tokenize ``text`` (a string or a list), expand its image tokens, and preprocess
        ``images`` (one, a list, or a list of lists as ``apply_chat_template`` passes them).

        Returns ``input_ids`` and ``attention_mask`` (padded to the longest text on the
        tokenizer's padding side) when text is given, ``pixel_values`` when images are.
        """
        if videos is not None or audio is not None:
            raise ValueError("a SiQ-VL student reads images and text only")
        return_tensors = kwargs.pop("return_tensors", None)
        flat = _flatten_images(images)
        data: dict = {}
        if flat:
            data["pixel_values"] = self.pixel_values(flat)
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            add_special = kwargs.pop("add_special_tokens", False)
            ids = [self.tokenizer(t, add_special_tokens=add_special).input_ids for t in texts]
            n_tokens = sum(row.count(self.image_token_id) for row in ids)
            if n_tokens != len(flat):
                raise ValueError(f"the text holds {n_tokens} image token(s) "
                                 f"({self.image_token}) for {len(flat)} image(s)")
            padded = self.tokenizer.pad(
                {"input_ids": [self.expand_image_tokens(row) for row in ids]},
                padding=kwargs.pop("padding", True),
                **({"padding_side": kwargs.pop("padding_side")} if "padding_side" in kwargs
                   else {}))
            data["input_ids"] = padded["input_ids"]
            data["attention_mask"] = padded["attention_mask"]
        return BatchFeature(data, tensor_type=return_tensors)


def _flatten_images(images) -> list:
    """None, one image, a list of images or a list of lists -> a flat list."""
    if images is None:
        return []
    if isinstance(images, Image.Image | np.ndarray):
        return [images]
    flat = []
    for item in images:
        flat.extend(_flatten_images(item) if isinstance(item, list | tuple) else [item])
    return [image for image in flat if image is not None]
