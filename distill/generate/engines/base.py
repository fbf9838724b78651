"""The one engine interface every teacher backend implements.

An engine gets a batch of chat requests (system text, user text, images as bytes) and
yields, per request, one result for each sample index ``k`` it was asked for: a
``Completion`` (text, token counts, finish reason) or an ``EngineFailure`` (why not, and
whether trying again later could help). Engines never raise for one bad request: that
request's results are failures and the batch goes on. They may yield in any order (the
``openai`` engine yields as responses arrive), so the runner can write each trace as soon
as it exists and a crash loses only requests in flight.

Two ways in. ``generate`` takes a batch and returns when its last result is back: what the
``--feed shard`` path and the batch engines (``hf``, ``builtin``) use. ``stream`` opens a
``Stream``, the continuous interface: the stage hands requests over one at a time, keeps
a bounded window of them in the engine across shard boundaries and collects results as
they finish, so a continuous-batching engine (vLLM, a server) never waits on the tail of
a batch or on the next shard's reading. An engine without one of its own streams through
``BatchStream``: its own batches, cut from the stream instead of from one shard.
"""

from __future__ import annotations

import abc
import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from distill.schemas import SamplingParams
from distill.schemas.trace import FinishReason


@dataclass(frozen=True)
class ChatRequest:
    """One sample put to one teacher: a system prompt, a user turn with its images.

    ``ks`` lists the sample indices wanted (0..k-1 on a fresh run, only the missing ones
    on a resumed run); ``id`` is opaque to the engine and comes back with the results.
    """

    id: str
    system: str
    user: str
    images: tuple[bytes, ...]
    sampling: SamplingParams
    ks: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class EngineFailure:
    """A request that produced no text. ``reason`` is short and stable (it is counted)."""

    reason: str
    message: str
    permanent: bool = True
    raw: str | None = None


Result = Completion | EngineFailure


@dataclass
class RequestResults:
    request: ChatRequest
    results: list[Result] = field(default_factory=list)  # aligned with request.ks


class EngineOptions(BaseModel):
    """Base for each engine's options block in a teacher set (unknown keys are errors).

    ``operational`` names the options that change how requests travel or how fast, never
    what the teacher answers; every other option is part of what a run's output folder
    holds, and a second run there with another value of it is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    operational: ClassVar[frozenset[str]] = frozenset()


class Engine(abc.ABC):
    """A teacher backend. Subclasses set ``name`` and ``Options`` and implement ``generate``.

    ``model`` names what answers (a model path, a served model name, a builtin reader);
    it goes into every trace key, so two different models never share keys.
    """

    name: ClassVar[str]
    Options: ClassVar[type[EngineOptions]] = EngineOptions
    # How many requests the runner hands over at once; None = the whole shard (vLLM
    # batches best when it sees everything).
    default_batch_size: ClassVar[int | None] = 64

    def __init__(self, model: str, options: EngineOptions) -> None:
        self.model = model
        self.options = options

    @abc.abstractmethod
    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        """Yield the results of every request exactly once, in any order."""

    def stream(self, batch_size: int | None = None) -> Stream:
        """The engine's continuous interface (see the module docstring); an engine with
        no continuous interface of its own runs batches of ``batch_size`` (its
        ``default_batch_size`` when None) cut from the stream."""
        return BatchStream(self, batch_size or self.default_batch_size or 64)

    def close(self) -> None:  # noqa: B027 - most engines hold nothing to free
        """Free what the engine holds (GPU memory, connections, worker processes)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stream(abc.ABC):
    """Requests in one at a time, results out as they finish, for one engine.

    The feed (``distill.generate.feed``) keeps at most ``window`` requests submitted and
    not yet collected; ``collect`` hands back the requests that finished since the last
    call (each exactly once, each the very ``ChatRequest`` object submitted), waiting up
    to ``wait_s`` for one when none has. Like ``generate``, a stream never raises for one
    bad request: its results are failures. ``close`` drops whatever is still in flight (a
    killed or failed run: those keys are asked again by the next run)."""

    window: int

    @abc.abstractmethod
    def submit(self, request: ChatRequest) -> None:
        """Hand one request to the engine (it may start at once, or queue)."""

    @abc.abstractmethod
    def collect(self, wait_s: float) -> list[RequestResults]:
        """The requests finished since the last call."""

    def close(self) -> None:  # noqa: B027 - a batch stream holds nothing
        """Abort what is still in flight."""


class BatchStream(Stream):
    """A stream over an engine's ``generate``: requests are held until ``window`` of them
    are there (or the feed has nothing more to hand over right now, and collects), then run
    as one batch. The hf engine and the built-in teachers work this way: their batches are
    the unit of work, and nothing of theirs runs while a batch is being cut."""

    def __init__(self, engine: Engine, batch_size: int) -> None:
        self.engine = engine
        self.window = batch_size
        self.held: list[ChatRequest] = []

    def submit(self, request: ChatRequest) -> None:
        self.held.append(request)

    def collect(self, wait_s: float) -> list[RequestResults]:
        batch, self.held = self.held, []
        return list(self.engine.generate(batch)) if batch else []

    def close(self) -> None:
        self.held = []


def image_mime(data: bytes) -> str:
    """MIME type from the image's magic bytes (data URLs must say what they hold)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return "application/octet-stream"


def data_url(data: bytes) -> str:
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def image_uuid(data: bytes) -> str:
    """A stable id of an image's bytes (vLLM's ``uuid`` of a content part: it then uses
    this id instead of hashing the decoded pixels again)."""
    return hashlib.sha256(data).hexdigest()


def openai_messages(request: ChatRequest, *, uuids: bool = False) -> list[dict]:
    """The request as OpenAI chat messages: images as data URLs (with ``uuids``, each
    part carries its bytes' ``image_uuid``, which vLLM reads), then the question."""
    content: list[dict] = [{"type": "image_url", "image_url": {"url": data_url(image)},
                            **({"uuid": image_uuid(image)} if uuids else {})}
                           for image in request.images]
    content.append({"type": "text", "text": request.user})
    messages: list[dict] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content})
    return messages


def finish_reason(value: Any) -> FinishReason:
    """Map an engine's finish reason onto the trace's three values."""
    if value in ("stop", "eos", "end_turn", "stop_sequence"):
        return "stop"
    if value in ("length", "max_tokens"):
        return "length"
    return "other"
