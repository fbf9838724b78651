"""``vllm``: vLLM offline inference (``LLM.chat``) with images, for large teachers on GPUs.

Every request of a batch (by default the whole shard) is handed to ``LLM.chat`` at once
so vLLM can schedule and batch them; prefix caching is on, so the shared system prompt and
template are computed once. Each request asks for ``n = len(ks)`` samples with
``SamplingParams(n, temperature, top_p, max_tokens, seed)``. Engine arguments (tensor
parallel size, max model len, GPU memory utilization, limit_mm_per_prompt, ...) pass
through from the teacher's options. vLLM is an optional extra (``pip install
'distill-vlm[vllm]'``), imported only when a teacher uses this engine.

If vLLM refuses a batch (a prompt longer than the model allows, say), the batch is
retried request by request so only the offending requests become rejections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field

from distill.core.errors import require_extra
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
    finish_reason,
    openai_messages,
)

log = logging.getLogger(__name__)


class VLLMOptions(EngineOptions):
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    limit_mm_per_prompt: dict[str, int] = Field(default_factory=lambda: {"image": 1})
    dtype: str = "auto"
    trust_remote_code: bool = False
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    chat_template: str | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)  # anything else for vllm.LLM


class VLLMEngine(Engine):
    name: ClassVar[str] = "vllm"
    Options = VLLMOptions
    default_batch_size: ClassVar[int | None] = None  # the whole shard at once

    def __init__(self, model: str, options: VLLMOptions) -> None:
        super().__init__(model, options)
        self.options: VLLMOptions = options
        vllm = require_extra("vllm", "vllm", "the vllm engine")
        args: dict[str, Any] = {
            "model": model, "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "limit_mm_per_prompt": options.limit_mm_per_prompt, "dtype": options.dtype,
            "trust_remote_code": options.trust_remote_code,
            "enable_prefix_caching": options.enable_prefix_caching,
            "enforce_eager": options.enforce_eager,
        }
        if options.max_model_len is not None:
            args["max_model_len"] = options.max_model_len
        args.update(options.engine_args)
        self._vllm = vllm
        self.llm = vllm.LLM(**args)

    def _params(self, request: ChatRequest) -> Any:
        sampling = request.sampling
        return self._vllm.SamplingParams(
            n=len(request.ks), temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=sampling.seed)

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        start = time.perf_counter()
        try:
            outputs = self._chat(requests)
        except ValueError as exc:  # vLLM validates the whole batch up front
            log.warning("vLLM refused a batch of %d (%s); retrying one by one",
                        len(requests), exc)
            yield from self._one_by_one(requests)
            return
        latency = (time.perf_counter() - start) / max(1, len(requests))
        for request, output in zip(requests, outputs, strict=True):
            yield RequestResults(request, self._results(output, latency))

    def _chat(self, requests: Sequence[ChatRequest]) -> list[Any]:
        return self.llm.chat([openai_messages(r) for r in requests],
                             [self._params(r) for r in requests], use_tqdm=False,
                             chat_template=self.options.chat_template)

    def _one_by_one(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        for request in requests:
            start = time.perf_counter()
            try:
                [output] = self._chat([request])
            except ValueError as exc:
                failure = EngineFailure(reason="engine_error:invalid_request",
                                        message=f"vLLM refused the request: {exc}")
                yield RequestResults(request, [failure for _ in request.ks])
                continue
            yield RequestResults(request, self._results(output, time.perf_counter() - start))

    @staticmethod
    def _results(output: Any, latency: float) -> list[Completion]:
        prompt_tokens = len(output.prompt_token_ids or [])
        return [Completion(text=choice.text, finish_reason=finish_reason(choice.finish_reason),
                           latency_s=latency, prompt_tokens=prompt_tokens,
                           completion_tokens=len(choice.token_ids))
                for choice in output.outputs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            del llm
            try:
                import gc

                gc.collect()
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
