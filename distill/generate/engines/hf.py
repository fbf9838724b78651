"""``hf``: transformers ``generate`` with any local image-text-to-text model, batched.

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a local folder (or a hub
id, if the user's environment allows downloads). Requests are padded on the left and
generated together; each (request, k) pair is one row. ``trust_remote_code`` stays off
unless a teacher's options turn it on.

Sampling is seeded per batch (from the teacher's seed and the requests in it), so a rerun
of the same batch on the same machine writes the same text.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.core.errors import require_extra
from distill.core.images import ImageError, decode_image
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
    Result,
)


class HFOptions(EngineOptions):
    operational: ClassVar[frozenset[str]] = frozenset({"device"})

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"  # "auto": cuda when available, else cpu
    trust_remote_code: bool = False
    micro_batch_size: int = Field(default=8, ge=1)  # rows (request x k) per generate call
    model_kwargs: dict[str, Any] = Field(default_factory=dict)


def engine_device(option: str) -> str:
    """The device an ``hf`` engine runs on: ``auto`` is cuda when there is one, else cpu."""
    torch = require_extra("torch", "hf", "the hf engine")
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return option


def hf_messages(request: ChatRequest) -> list[dict]:
    content: list[dict] = [{"type": "image"} for _ in request.images]
    content.append({"type": "text", "text": request.user})
    messages: list[dict] = []
    if request.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": request.system}]})
    messages.append({"role": "user", "content": content})
    return messages


class HFEngine(Engine):
    name: ClassVar[str] = "hf"
    Options = HFOptions
    default_batch_size: ClassVar[int | None] = 64

    def __init__(self, model: str, options: HFOptions) -> None:
        super().__init__(model, options)
        self.options: HFOptions = options
        torch = require_extra("torch", "hf", "the hf engine")
        transformers = require_extra("transformers", "hf", "the hf engine")
        self.device = engine_device(options.device)
        self.processor = transformers.AutoProcessor.from_pretrained(
            model, trust_remote_code=options.trust_remote_code)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        dtype = options.dtype if options.dtype == "auto" else getattr(torch, options.dtype)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            model, dtype=dtype, trust_remote_code=options.trust_remote_code,
            **options.model_kwargs).to(self.device).eval()
        generation = self.model.generation_config
        eos = generation.eos_token_id if generation.eos_token_id is not None else (
            tokenizer.eos_token_id)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (generation.pad_token_id if generation.pad_token_id is not None
                       else tokenizer.pad_token_id)

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        rows: list[tuple[ChatRequest, int, list]] = []
        results: dict[str, dict[int, Result]] = {r.id: {} for r in requests}
        for request in requests:
            try:
                images = [decode_image(data) for data in request.images]
            except ImageError as exc:
                failure = EngineFailure(reason="engine_error:bad_image", message=exc.message)
                yield RequestResults(request, [failure for _ in request.ks])
                results.pop(request.id)
                continue
            rows.extend((request, k, images) for k in request.ks)
        by_id = {r.id: r for r in requests}
        size = self.options.micro_batch_size
        for start in range(0, len(rows), size):
            for (request, k, _), completion in zip(rows[start:start + size],
                                                   self._run(rows[start:start + size]),
                                                   strict=True):
                results[request.id][k] = completion
                if len(results[request.id]) == len(request.ks):
                    got = results.pop(request.id)
                    yield RequestResults(by_id[request.id], [got[k] for k in request.ks])

    def _run(self, rows: list[tuple[ChatRequest, int, list]]) -> list[Completion]:
        import torch

        start = time.perf_counter()
        texts = [self.processor.apply_chat_template(hf_messages(request),
                                                    add_generation_prompt=True, tokenize=False)
                 for request, _, _ in rows]
        images = [list(images) for _, _, images in rows]
        inputs = self.processor(text=texts, images=images, padding=True,
                                return_tensors="pt").to(self.device)
        sampling = rows[0][0].sampling
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens,
                                  "pad_token_id": self.pad_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        seed = hashlib.sha256(repr([(sampling.seed, r.id, k) for r, k, _ in rows]).encode())
        torch.manual_seed(int.from_bytes(seed.digest()[:4], "little"))
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].tolist()
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        latency = (time.perf_counter() - start) / len(rows)
        completions = []
        for tokens, prompt_length in zip(new_tokens, prompt_lengths, strict=True):
            stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            kept = tokens[:stop] if stop is not None else tokens
            completions.append(Completion(
                text=self.tokenizer.decode(kept, skip_special_tokens=True),
                finish_reason="stop" if stop is not None else "length", latency_s=latency,
                prompt_tokens=int(prompt_length),
                completion_tokens=len(kept) + (1 if stop is not None else 0)))
        return completions

    def close(self) -> None:
        self.model = None
