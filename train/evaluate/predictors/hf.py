"""Any local transformers image-text-to-text model: batched greedy generation, left padding.

Nothing is fetched from a hub: the path must be a local folder saved with
``save_pretrained`` (model and processor, with a chat template).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from distill.errors import DistillError, InputError
from distill.prompts import PromptTemplate
from schemas import ModelRef, Sample
from train.evaluate.predictors.base import (
    FinishReason,
    Generation,
    Mode,
    chunked,
    load_sample_image,
    mode_prompt,
    model_fingerprint,
    read_model_type,
)


def chat_messages(prompt: PromptTemplate, sample: Sample) -> list[dict[str, Any]]:
    """A system turn (if any) and a user turn holding the image, then the question."""
    system, user = prompt.render(sample)
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": user}]})
    return messages


class HfPredictor:
    """Greedy decoding with a transformers model; prompts from prompts/<mode>.yaml."""

    def __init__(self, path: Path, *, batch_size: int = 8, max_new_tokens: int = 512,
                 dtype: str = "auto", device: str | None = None,
                 prompt: str | Path | None = None) -> None:
        self.path = path.resolve()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt_override = prompt
        self.model_type = read_model_type(self.path)
        self._dtype_name = dtype
        self._device_name = device

    @cached_property
    def model_ref(self) -> ModelRef:
        return ModelRef(kind="hf", name=self.path.name, path=str(self.path),
                        fingerprint=model_fingerprint(self.path))

    @cached_property
    def _torch(self) -> Any:
        import torch

        return torch

    @cached_property
    def device(self) -> str:
        if self._device_name:
            return self._device_name
        return "cuda" if self._torch.cuda.is_available() else "cpu"

    @cached_property
    def dtype(self) -> Any:
        torch = self._torch
        if self._dtype_name == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            return {"bfloat16": torch.bfloat16, "float16": torch.float16,
                    "float32": torch.float32}[self._dtype_name]
        except KeyError:
            raise DistillError(f"unknown dtype {self._dtype_name!r}; use auto, bfloat16, "
                               "float16 or float32") from None

    def generation_config(self, mode: Mode) -> dict[str, JsonValue]:
        prompt = mode_prompt(mode, self.prompt_override)
        return {"mode": mode, "prompt_id": prompt.id, "prompt_hash": prompt.hash,
                "decoding": "greedy", "max_new_tokens": self.max_new_tokens,
                "dtype": str(self.dtype).removeprefix("torch.")}

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            model = AutoModelForImageTextToText.from_pretrained(
                str(self.path), dtype=self.dtype, local_files_only=True)
        except ValueError as exc:
            raise InputError(
                f"a '{self.model_type}' model is not an image-text-to-text model that "
                f"transformers can load here ({str(exc).splitlines()[0]})", file=self.path,
                reason="wrong_model") from None
        processor = AutoProcessor.from_pretrained(str(self.path), local_files_only=True)
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "chat_template", None) is None:
            raise InputError("the processor has no tokenizer or no chat template",
                             file=self.path, reason="wrong_model")
        tokenizer.padding_side = "left"  # decoder-only batches must be padded on the left
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(self.device).eval()
        return model, processor

    def predict(self, samples: Sequence[Sample], image_root: Path | None,
                mode: Mode) -> list[Generation]:
        prompt = mode_prompt(mode, self.prompt_override)
        outputs: list[Generation] = []
        for batch in chunked(samples, self.batch_size):
            outputs.extend(self._generate(batch, image_root, prompt))
        return outputs

    def _generate(self, batch: Sequence[Sample], image_root: Path | None,
                  prompt: PromptTemplate) -> list[Generation]:
        model, processor = self._loaded
        texts = [processor.apply_chat_template(chat_messages(prompt, sample),
                                               add_generation_prompt=True, tokenize=False)
                 for sample in batch]
        images = [load_sample_image(sample, image_root) for sample in batch]
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        started = time.perf_counter()
        with self._torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                       do_sample=False, use_cache=True,
                                       pad_token_id=processor.tokenizer.pad_token_id)
        elapsed = time.perf_counter() - started
        new_tokens = generated[:, inputs["input_ids"].shape[1]:].tolist()
        stop_ids = _eos_ids(model, processor.tokenizer)
        share = elapsed / len(batch)
        results = []
        for tokens in new_tokens:
            kept, finish = _until_eos(tokens, stop_ids, self.max_new_tokens)
            text = processor.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(Generation(text=text, output_tokens=len(kept), latency_s=share,
                                      finish_reason=finish))
        return results

    def close(self) -> None:
        self.__dict__.pop("_loaded", None)
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {token for token in ids if token is not None}


def _until_eos(tokens: list[int], stop_ids: set[int],
               max_new_tokens: int) -> tuple[list[int], FinishReason]:
    """The generated tokens up to and including the first stop token, and why it ended."""
    for index, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: index + 1], "stop"
    return tokens, "length" if len(tokens) >= max_new_tokens else "other"
