"""``vllm``: vLLM offline inference with images, for large teachers on GPUs.

The stream (the default feed) uses vLLM's own continuous interface: ``LLM.enqueue_chat``
puts one conversation in the engine's queue (rendered and its image processed then, by
the same code ``LLM.chat`` runs), and ``llm_engine.step()`` hands back the requests that
finished, as ``LLM.wait_for_completion`` does internally (vllm 0.32's
``entrypoints/llm.py`` and ``entrypoints/common/offline.py``). The feed keeps ``window``
requests in the engine (default twice the scheduler's ``max_num_seqs``), so its queue is
never empty while a shard's tail decodes or the next shard is read; V1 runs the engine
core in its own process, so that reading overlaps the GPU's work. A vLLM without
``enqueue_chat`` falls back to ``LLM.chat`` over each window (batches, with a warning).
The ``--feed shard`` path hands a whole shard to ``LLM.chat`` and waits for all of it.
Prefix caching is on, so the shared system prompt and template are computed once.

Images: each content part carries ``uuid`` = the sha256 of its bytes, so vLLM does not
hash the same pixels again; the multimodal processor cache (``mm_processor_cache_gb``)
is off by default, since a stream shows each image to a teacher's engine once (k samples
are one request with ``n = k``) and the cache would only hold memory.

Each request asks for ``n = len(ks)`` samples with
``SamplingParams(n, temperature, top_p, max_tokens, seed)``. Engine arguments (tensor
parallel size, max model len, GPU memory utilization, limit_mm_per_prompt, ...) pass
through from the teacher's options. vLLM is an optional extra (``pip install
'distill-vlm[vllm]'``), imported only when a teacher uses this engine.

If vLLM refuses a batch (a prompt longer than the model allows, say), the batch is
retried request by request so only the offending requests become rejections; the stream
refuses such a request alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field

from distill.core.errors import require_extra
from distill.generate.engines.base import (
    BatchStream,
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
    Stream,
    finish_reason,
    openai_messages,
)

log = logging.getLogger(__name__)


class VLLMOptions(EngineOptions):
    # Options that change how fast or where, never what the teacher answers.
    operational: ClassVar[frozenset[str]] = frozenset({
        "tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching", "window",
        "mm_processor_cache_gb"})

    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    limit_mm_per_prompt: dict[str, int] = Field(default_factory=lambda: {"image": 1})
    dtype: str = "auto"
    trust_remote_code: bool = False
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    chat_template: str | None = None
    window: int | None = Field(default=None, ge=1)  # requests in the engine; 2 x max_num_seqs
    mm_processor_cache_gb: float = Field(default=0.0, ge=0)
    engine_args: dict[str, Any] = Field(default_factory=dict)  # anything else for vllm.LLM


class VLLMEngine(Engine):
    name: ClassVar[str] = "vllm"
    Options = VLLMOptions
    default_batch_size: ClassVar[int | None] = None  # the whole shard at once

    def __init__(self, model: str, options: VLLMOptions) -> None:
        super().__init__(model, options)
        self.options: VLLMOptions = options
        args: dict[str, Any] = {
            "model": model, "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "limit_mm_per_prompt": options.limit_mm_per_prompt, "dtype": options.dtype,
            "trust_remote_code": options.trust_remote_code,
            "enable_prefix_caching": options.enable_prefix_caching,
            "enforce_eager": options.enforce_eager,
            "mm_processor_cache_gb": options.mm_processor_cache_gb,
        }
        if options.max_model_len is not None:
            args["max_model_len"] = options.max_model_len
        args.update(options.engine_args)
        self._vllm, self.llm = self.load(args)

    def load(self, args: dict[str, Any]) -> tuple[Any, Any]:
        """(the vllm module, its ``LLM`` built from ``args``); the one place vLLM itself is
        touched, so that a simulated engine (``testing/sim_vllm.py``) can stand in for it
        under the very same feeding code."""
        vllm = require_extra("vllm", "vllm", "the vllm engine")
        return vllm, vllm.LLM(**args)

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
            yield RequestResults(request, self.results(output, latency))

    def _chat(self, requests: Sequence[ChatRequest]) -> list[Any]:
        return self.llm.chat([openai_messages(r, uuids=True) for r in requests],
                             [self._params(r) for r in requests], use_tqdm=False,
                             chat_template=self.options.chat_template)

    def stream(self, batch_size: int | None = None) -> Stream:
        window = self.options.window or 2 * self.max_num_seqs()
        if not hasattr(self.llm, "enqueue_chat"):
            log.warning("this vLLM has no LLM.enqueue_chat: feeding it LLM.chat batches of "
                        "%d instead of a continuous stream", window)
            return BatchStream(self, window)
        return VLLMStream(self, window)

    def max_num_seqs(self) -> int:
        """The scheduler's batch size (what the engine decodes at once)."""
        try:
            return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        except (AttributeError, TypeError, ValueError):
            return 256

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
            yield RequestResults(request, self.results(output, time.perf_counter() - start))

    @staticmethod
    def results(output: Any, latency: float) -> list[Completion]:
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


class VLLMStream(Stream):
    """Requests into vLLM's queue one at a time (``LLM.enqueue_chat``), finished ones out
    of ``llm_engine.step()``; one thread drives both, as vLLM's frontend is not
    thread-safe. A request vLLM refuses (a prompt longer than the model allows) is a
    permanent rejection of that request alone."""

    def __init__(self, engine: VLLMEngine, window: int) -> None:
        self.engine = engine
        self.window = window
        self.in_engine: dict[str, tuple[ChatRequest, float]] = {}  # vLLM's id -> request
        self.refused: list[RequestResults] = []

    def submit(self, request: ChatRequest) -> None:
        engine = self.engine
        try:
            [request_id] = engine.llm.enqueue_chat(
                [openai_messages(request, uuids=True)], [engine._params(request)],
                use_tqdm=False, chat_template=engine.options.chat_template)
        except ValueError as exc:
            failure = EngineFailure(reason="engine_error:invalid_request",
                                    message=f"vLLM refused the request: {exc}")
            self.refused.append(RequestResults(request, [failure for _ in request.ks]))
            return
        self.in_engine[_external_id(request_id)] = (request, time.perf_counter())

    def collect(self, wait_s: float) -> list[RequestResults]:
        done, self.refused = self.refused, []
        llm_engine = self.engine.llm.llm_engine
        if not self.in_engine:
            return done
        if not llm_engine.has_unfinished_requests():  # ours are gone without an output
            return done + self._lost()
        for output in llm_engine.step():  # one engine step: what finished in it
            if not getattr(output, "finished", True):
                continue
            entry = self.in_engine.pop(_external_id(output.request_id), None)
            if entry is None:
                continue  # not ours (another caller of the same LLM)
            request, start = entry
            done.append(RequestResults(request, self.engine.results(
                output, time.perf_counter() - start)))
        return done

    def _lost(self) -> list[RequestResults]:
        """Requests the engine no longer holds and never answered (aborted inside vLLM):
        transient failures, asked again by the next run, never a feed waiting forever."""
        failure = EngineFailure(reason="engine_error:lost", permanent=False,
                                message="vLLM dropped the request without an output")
        lost = [RequestResults(request, [failure for _ in request.ks])
                for request, _ in self.in_engine.values()]
        self.in_engine.clear()
        return lost

    def close(self) -> None:
        if self.in_engine and self.engine.llm is not None:
            try:
                self.engine.llm.llm_engine.abort_request(list(self.in_engine))
            except Exception:  # noqa: BLE001 - a dying engine: nothing left to abort
                log.debug("aborting vLLM requests", exc_info=True)
        self.in_engine.clear()


def _external_id(request_id: str) -> str:
    """vLLM's request id as its outputs carry it: ``enqueue_chat`` returns the engine's
    internal id (the LLM's counter plus ``-`` and 8 random characters, vllm 0.32
    ``InputProcessor.assign_request_id``), outputs and ``abort_request`` use the counter."""
    head, sep, tail = request_id.rpartition("-")
    return head if sep and head.isdigit() and len(tail) == 8 else request_id
