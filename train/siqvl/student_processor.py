"""StudentProcessor: (image, question, rationale, answer) -> input ids, pixel values, labels.

The toolkit's side of the student's processor. The portable ``SiQVLProcessor``
(``processing.py``, which travels with a saved student) holds the tokenizer, the image
preprocessing and the chat template; this wraps it with what only the toolkit knows:
samples, prompt templates (``prompts/*.yaml``) and training labels.

One function builds the prompt for training and for evaluation (``prompt_ids``), so the
student is always asked in exactly the format it was trained on:

    [system]  the prompt template's system text (if ``include_system``)
    user      <|vision_start|><|image_pad|> x N<|vision_end|>\\n + the template's user text
    assistant "<reasoning>\\nAnswer: <answer>" (cot) or "Answer: <answer>" (direct), then EOS

Labels are -100 everywhere but the assistant's tokens (and its closing EOS token), so the
loss is on the answer only. The chat template is the tokenizer's own (ChatML for Qwen2.5
and for the tiny local tokenizer), taught to read image parts too
(``multimodal_chat_template``): rendered from plain strings it gives the very same text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from distill.core.errors import DistillError, InputError
from distill.core.model_folders import PROCESSOR_CONFIG
from distill.core.prompts import STUDENT_KINDS, PromptTemplate, load_prompt
from distill.core.text import parse_json
from distill.schemas import Sample
from distill.train.siqvl.modeling import IGNORE_INDEX
from distill.train.siqvl.processing import SiQVLProcessor, multimodal_chat_template

PromptMode = Literal["cot", "direct"]
# The prompt each mode asks with, unless the model spec names others (``prompts:``): the
# teachers' own prompts, so a pretrained student is asked as its teachers were.
PROMPT_FILES: dict[str, str] = {"cot": "cot", "direct": "direct"}


@dataclass(frozen=True)
class Encoded:
    """One tokenized example; ``labels`` is None for a generation prompt."""

    input_ids: list[int]
    labels: list[int] | None

    @property
    def num_label_tokens(self) -> int:
        return 0 if self.labels is None else sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class ProcessorSettings:
    """What, besides the tokenizer, decides the student's input format (saved with it)."""

    image_size: int
    num_image_tokens: int
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_token: str = "<|image_pad|>"
    vision_start: str = "<|vision_start|>"
    vision_end: str = "<|vision_end|>"
    include_system: bool = True
    # mode -> prompt file (prompts/NAME.yaml). Saved with the student, so an eval asks it
    # in the format it was trained on; folders saved before this field get the default.
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPT_FILES))

    def __post_init__(self) -> None:
        # A mode the spec (or a saved folder) does not name asks with the default prompt.
        self.prompts = {**PROMPT_FILES, **self.prompts}

    @classmethod
    def of(cls, hf: SiQVLProcessor) -> ProcessorSettings:
        return cls(image_size=hf.image_size, num_image_tokens=hf.num_image_tokens,
                   image_mean=list(hf.image_mean), image_std=list(hf.image_std),
                   image_token=hf.image_token, vision_start=hf.vision_start,
                   vision_end=hf.vision_end, include_system=hf.include_system,
                   prompts=dict(hf.prompts))


PROMPT_CACHE_SIZE = 4096


class StudentProcessor:
    """The portable processor (``hf``) plus the student's prompts and training labels."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: ProcessorSettings) -> None:
        self.settings = settings
        if not tokenizer.chat_template:
            raise DistillError("the tokenizer has no chat template; a SiQ-VL student is "
                               "asked through one (ChatML for Qwen2.5 and the tiny tokenizer)")
        # One template for the tokenizer and the processor, so the folder's
        # chat_template.jinja is what both load back.
        template = multimodal_chat_template(
            tokenizer.chat_template,
            f"{settings.vision_start}{settings.image_token}{settings.vision_end}")
        tokenizer.chat_template = template
        try:
            self.hf = SiQVLProcessor(tokenizer, chat_template=template, **asdict(settings))
        except ValueError as exc:
            raise DistillError(str(exc)) from None
        self.tokenizer = self.hf.tokenizer
        self._prompts: dict[str, PromptTemplate] = {}
        # Chat messages -> prompt ids: a data set asks the same few questions again and again
        self._prompt_ids: dict[tuple, tuple[int, ...]] = {}

    # -- identity ------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return self.hf.image_token_id

    @property
    def eos_token_id(self) -> int:
        return self.hf.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.hf.pad_token_id

    def prompt_template(self, mode: PromptMode) -> PromptTemplate:
        prompts = self.settings.prompts
        if mode not in prompts:
            raise DistillError(f"unknown prompt mode {mode!r}; use one of {sorted(prompts)}")
        if mode not in self._prompts:
            self._prompts[mode] = load_prompt(prompts[mode], kind=STUDENT_KINDS)
        return self._prompts[mode]

    # -- text ----------------------------------------------------------------------------
    def messages(self, sample: Sample, mode: PromptMode) -> list[dict[str, str]]:
        return self.chat_messages(*self.prompt_template(mode).render(sample))

    def chat_messages(self, system: str, user: str) -> list[dict[str, str]]:
        """A rendered prompt as the student's chat: the image first in the user turn (the
        one place this layout is written: training, eval and the student as a teacher)."""
        content = f"{self.hf.image_placeholder}\n{user}"
        messages = [{"role": "user", "content": content}]
        if self.settings.include_system and system:
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def prompt_ids(self, sample: Sample, mode: PromptMode) -> list[int]:
        """The generation prompt, with the image placeholder expanded to N image tokens."""
        return self.chat_ids(self.messages(sample, mode))

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Chat messages -> generation prompt ids, the image placeholder expanded."""
        key = tuple((m["role"], m["content"]) for m in messages)
        cached = self._prompt_ids.get(key)
        if cached is None:
            if len(self._prompt_ids) >= PROMPT_CACHE_SIZE:
                self._prompt_ids.clear()
            text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
            cached = self._prompt_ids[key] = tuple(self._expand_image(text))
        return list(cached)

    def _expand_image(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        image_id = self.image_token_id
        if ids.count(image_id) != 1:
            raise DistillError(f"the prompt must hold exactly one image token; it holds "
                               f"{ids.count(image_id)} (does the question contain "
                               f"{self.settings.image_token!r}?)")
        return self.hf.expand_image_tokens(ids)

    def encode(self, sample: Sample, mode: PromptMode, target: str | None) -> Encoded:
        """Prompt ids plus, for training, the target's ids and EOS with their labels."""
        return self.encode_many([(sample, mode, target)])[0]

    def encode_many(self, items: list[tuple[Sample, PromptMode, str | None]]) -> list[Encoded]:
        """``encode`` for many examples: the targets are tokenized in one batched call (a
        data set of 8,000 examples encodes in a second, not in 8,000 tokenizer calls)."""
        targets = [target for _, _, target in items if target is not None]
        answers = iter(self.tokenizer(targets, add_special_tokens=False).input_ids
                       if targets else [])
        out = []
        for sample, mode, target in items:
            prompt = self.prompt_ids(sample, mode)
            if target is None:
                out.append(Encoded(prompt, None))
                continue
            answer = next(answers) + [self.eos_token_id]
            out.append(Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
        return out

    # -- images --------------------------------------------------------------------------
    def image_to_uint8(self, image: Image.Image) -> torch.Tensor:
        return self.hf.image_to_uint8(image)

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.hf.normalize(images, dtype)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        return self.hf.pixel_values(images)

    # -- generation batches --------------------------------------------------------------
    def generation_batch(self, samples: list[Sample], images: list[Image.Image],
                         mode: PromptMode) -> dict[str, torch.Tensor]:
        """Left-padded prompts (so every row's next token is at the end) + pixel values."""
        return self.padded_batch([self.prompt_ids(sample, mode) for sample in samples], images)

    def padded_batch(self, prompts: list[list[int]],
                     images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Prompt ids left-padded to one width, with their images' pixel values."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention_mask[row, width - len(ids):] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "pixel_values": self.pixel_values(images)}

    # -- persistence ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """The tokenizer's files, processor_config.json, chat_template.jinja and (through
        the class's auto-class registration) processing.py: what AutoProcessor loads."""
        self.hf.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> StudentProcessor:
        directory = Path(directory)
        config_path = directory / PROCESSOR_CONFIG
        if not config_path.exists():
            raise DistillError(f"{directory} is not a SiQ-VL folder (no {PROCESSOR_CONFIG})")
        saved = parse_json(config_path.read_bytes(), file=config_path)
        if not isinstance(saved, dict):
            raise InputError("not a processor config (a JSON object)", file=config_path,
                             reason="bad_json")
        # transformers' own file name; a folder saved before the processor was a
        # ProcessorMixin holds ProcessorSettings there, without processor_class.
        if "processor_class" in saved:  # a ProcessorMixin's settings
            return cls.of(SiQVLProcessor.from_pretrained(str(directory)))
        # A folder saved before: ProcessorSettings as they were, the tokenizer beside them.
        try:
            settings = ProcessorSettings(**saved)
        except TypeError as exc:  # a field missing, or one no version wrote
            raise InputError(f"not a SiQ-VL processor config: {exc}", file=config_path,
                             reason="bad_json") from None
        return cls(AutoTokenizer.from_pretrained(directory), settings)

    @classmethod
    def of(cls, hf: SiQVLProcessor) -> StudentProcessor:
        """The toolkit's processor around a portable one (its tokenizer and settings)."""
        return cls(hf.tokenizer, ProcessorSettings.of(hf))
