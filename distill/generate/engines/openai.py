"""``openai``: any OpenAI-compatible chat server (``vllm serve``, SGLang, hosted APIs).

Requests go out concurrently (at most ``max_concurrency`` on the wire at once), one per
(sample, k): sample ``k`` asks with ``seed + k``, so samples differ at temperature > 0
and each one succeeds or fails on its own. Transient failures (429, 408, 5xx, timeouts,
dropped connections, malformed or empty responses) are retried by tenacity with
exponential backoff and full jitter, waiting at least what a ``Retry-After`` header asks;
what still fails after ``max_attempts`` becomes a transient ``EngineFailure`` (retried on
the next run). Other 4xx answers (bad request, auth, unknown model) are permanent at once.

``base_url`` may list several servers (a fleet with no load balancer in front): requests
go to the least loaded one, and a server that stops answering is taken out of the rotation
and its requests retried on the others until it answers again (``engines/fleet.py``).

The API key is read from the environment variable named by ``api_key_env`` and is sent
only in the Authorization header: it is never logged, and any echo of it in a server's
error text is masked before that text reaches a log, a rejection or an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    EngineOptions,
    RequestResults,
    Result,
    finish_reason,
    openai_messages,
)
from distill.generate.engines.fleet import Fleet

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429})
CONNECTIONS_PER_CLIENT = 4
MAX_ERROR_CHARS = 300


class OpenAIOptions(EngineOptions):
    base_url: str | list[str] = "http://127.0.0.1:8000/v1"  # one server, or a fleet
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = Field(default=16, ge=1, le=4096)
    timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    max_retry_after_s: float = Field(default=300.0, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    server_cooldown_s: float = Field(default=1.0, gt=0)  # a silent server's first time out
    server_cooldown_max_s: float = Field(default=30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _some_servers(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls or any(not url.strip() for url in urls):
            raise ValueError("needs at least one server URL, none empty")
        if len(set(urls)) != len(urls):
            raise ValueError("lists a server twice")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not a server URL: it takes http(s)://HOST[:PORT]"
                                 "/PATH, e.g. http://127.0.0.1:8000/v1")
        return value

    @property
    def urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's requested wait, if any.
    ``unreachable``: the server did not answer at all; ``failover``: another server is in
    the rotation, so the retry goes there at once and uses no attempt."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None, *,
                 unreachable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.failover = False


class PermanentError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def completion_text(message: dict[str, Any]) -> str:
    """The assistant text, with a separate reasoning field (vLLM reasoning parsers,
    DeepSeek-style APIs) put back in front inside <think> tags."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if content is None:
        content = message.get("refusal") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip():
        return f"<think>{reasoning}</think>\n{content}"
    return str(content)


class OpenAIEngine(Engine):
    name: ClassVar[str] = "openai"
    Options = OpenAIOptions
    default_batch_size: ClassVar[int | None] = 512

    def __init__(self, model: str, options: OpenAIOptions) -> None:
        super().__init__(model, options)
        self.options: OpenAIOptions = options
        self._api_key = os.environ.get(options.api_key_env) if options.api_key_env else None
        self.fleet = Fleet(options.urls, options.server_cooldown_s, options.server_cooldown_max_s)

    def __repr__(self) -> str:  # never show the key, even in a debugger or traceback
        return f"OpenAIEngine(model={self.model!r}, base_url={self.options.base_url!r})"

    def redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    # -- the batch ------------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        """Run every (request, k) on an event loop in a helper thread; yield each request
        as soon as all its samples are back, while the loop keeps the wire busy."""
        results: queue.Queue = queue.Queue()
        box: dict[str, Any] = {}
        ready = threading.Event()

        def run_loop() -> None:
            loop = asyncio.new_event_loop()
            box["loop"] = loop
            try:
                main = loop.create_task(self._run_all(requests, results))
                box["main"] = main
                ready.set()
                loop.run_until_complete(main)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                results.put(exc)
            finally:
                ready.set()
                loop.close()

        thread = threading.Thread(target=run_loop, name="openai-engine", daemon=True)
        thread.start()
        ready.wait()
        by_id = {r.id: r for r in requests}
        got: dict[str, dict[int, Result]] = {r.id: {} for r in requests}
        try:
            for _ in range(sum(len(r.ks) for r in requests)):
                item = results.get()
                if isinstance(item, BaseException):
                    raise item
                request_id, k, result = item
                got[request_id][k] = result
                request = by_id[request_id]
                if len(got[request_id]) == len(request.ks):
                    done = got.pop(request_id)
                    yield RequestResults(request, [done[k] for k in request.ks])
        finally:
            main, loop = box.get("main"), box.get("loop")
            if thread.is_alive() and main is not None and not loop.is_closed():
                loop.call_soon_threadsafe(main.cancel)
            thread.join()

    async def _run_all(self, requests: Sequence[ChatRequest], results: queue.Queue) -> None:
        """A slot per allowed concurrent request; slots share small httpx clients.

        One httpx pool holding many connections stalls under load (measured here: 64
        connections in one pool gave ~80 requests/s with 5 s tail latencies, the same 64
        spread over clients of 4 gave ~400/s), so connections are split over several
        clients, all sharing one SSL context.
        """
        size = self.options.max_concurrency
        per_client = min(CONNECTIONS_PER_CLIENT, size)
        ssl_context = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        clients = [httpx.AsyncClient(timeout=httpx.Timeout(self.options.timeout_s),
                                     limits=limits, verify=ssl_context)
                   for _ in range(-(-size // per_client))]
        slots: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for slot in range(size):
            slots.put_nowait(clients[slot // per_client])
        try:
            async def one(request: ChatRequest, k: int) -> None:
                results.put((request.id, k, await self._one(slots, request, k)))

            await asyncio.gather(*(one(request, k) for request in requests
                                   for k in request.ks))
        finally:
            await asyncio.gather(*(client.aclose() for client in clients))

    async def _one(self, slots: asyncio.Queue, request: ChatRequest, k: int) -> Result:
        """One sample of one request, with retries; a slot is held only while a request
        is on the wire, never during a backoff sleep. A failover to another server (the
        first one stopped answering) is not counted as an attempt."""
        body = self._body(request, k)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        attempts = failovers = 0

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number - failovers >= self.options.max_attempts

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(TransientError), stop=stop,
                wait=self._wait, before_sleep=self._log_retry, reraise=True,
            ):
                with attempt:
                    attempts += 1
                    try:
                        return await self._send(slots, body, headers)
                    except TransientError as exc:
                        failovers += exc.failover
                        raise
        except TransientError as exc:
            return EngineFailure(
                reason=f"engine_error:{exc.reason}", permanent=False,
                message=f"{exc.message} (gave up after {attempts - failovers} attempt(s); "
                        "the next run retries it)")
        except PermanentError as exc:
            return EngineFailure(reason=f"engine_error:{exc.reason}", message=exc.message,
                                 permanent=True)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, slots: asyncio.Queue, body: dict[str, Any],
                    headers: dict[str, str]) -> Completion:
        """One attempt: a slot, then a server of the fleet; tells the fleet how it went."""
        client = await slots.get()
        try:
            server = await self.fleet.acquire()
            try:
                completion = await self._post(client, server.url, body, headers)
            except TransientError as exc:
                if exc.unreachable:
                    exc.failover = self.fleet.unreachable(server)
                else:
                    self.fleet.answered(server)
                raise
            except PermanentError:
                self.fleet.answered(server)
                raise
            finally:
                self.fleet.release(server)
            self.fleet.answered(server)
            return completion
        finally:
            slots.put_nowait(client)

    def _body(self, request: ChatRequest, k: int) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.model, "messages": openai_messages(request),
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed + k
        body.update(self.options.extra_body)
        return body

    async def _post(self, client: httpx.AsyncClient, base_url: str, body: dict[str, Any],
                    headers: dict[str, str]) -> Completion:
        start = time.perf_counter()
        try:
            response = await client.post(base_url + "/chat/completions", json=body,
                                         headers=headers)
        except httpx.TimeoutException:
            raise TransientError("timeout", f"no response within {self.options.timeout_s} s "
                                 f"from {base_url}", unreachable=True) from None
        except httpx.TransportError as exc:
            raise TransientError("connection", self.redact(
                f"connection to {base_url} failed: {type(exc).__name__}: {exc}"),
                unreachable=True) from None
        latency = time.perf_counter() - start
        status = response.status_code
        if status >= 400:
            detail = self.redact(response.text[:MAX_ERROR_CHARS])
            message = f"HTTP {status} from {base_url}: {detail}"
            if status in RETRY_STATUS or status >= 500:
                raise TransientError(f"http_{status}", message,
                                     parse_retry_after(response.headers.get("retry-after")))
            raise PermanentError(f"http_{status}", message)
        return self._completion(response, latency)

    def _completion(self, response: httpx.Response, latency: float) -> Completion:
        try:
            data = response.json()
        except ValueError:
            raise TransientError("bad_response", "response body is not valid JSON: "
                                 + self.redact(response.text[:MAX_ERROR_CHARS])) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            raise TransientError("empty_choices", "response has no choices: "
                                 + self.redact(response.text[:MAX_ERROR_CHARS]))
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise TransientError("bad_response", "response choice has no message")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Completion(
            text=completion_text(message), finish_reason=finish_reason(choice.get("finish_reason")),
            latency_s=latency, prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")))

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, but never less than Retry-After asks."""
        backoff = wait_random_exponential(multiplier=self.options.backoff_initial_s,
                                          max=self.options.backoff_max_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.failover:
            return 0.0
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return max(min(exc.retry_after, self.options.max_retry_after_s), backoff)
        return backoff

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug("retrying after %s (attempt %d, waiting %.2f s)",
                  getattr(exc, "reason", type(exc).__name__), state.attempt_number, wait)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
