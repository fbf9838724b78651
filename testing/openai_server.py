"""A real OpenAI-protocol HTTP server on loopback, backed by a real engine, with faults.

It answers ``POST /v1/chat/completions`` by decoding the data-URL images and running the
request through any ``Engine`` (the built-in digit readers, or the ``hf`` engine on the
tiny test model). A fault plan can make it misbehave deterministically per request
identity and attempt: 429 with Retry-After, 500/503, hanging past the client's timeout,
dropping the connection, a malformed JSON body, an empty choice list, a permanent 400.

It can also answer on a fixed script: ``script(body)`` returns the reply text for a
request (or None to let the engine answer). ``judge_script`` makes it a judge whose
replies are, per request identity, either the engine's real grading (the built-in digits
judge) or one of the malformed replies a judge model writes (no score, out of range, not
a number, two scores).

It binds 127.0.0.1 only, counts requests in flight (to check client concurrency limits),
and shuts itself down after ``max_lifetime_s`` even if a test forgets to.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from distill.generate.engines.base import ChatRequest, Completion, Engine
from distill.schemas import SamplingParams

# (identity, attempt number from 1) -> action
FaultPlan = Callable[[str, int], str]
# request body -> the reply text, or None to let the engine answer
ReplyScript = Callable[[dict], str | None]
ACTIONS = ("ok", "429", "500", "503", "timeout", "drop", "malformed", "empty", "400")


# A judge on a fixed script: per request identity, the reply that replaces the engine's
# (None: the engine grades for real).
JUDGE_REPLIES: list[str | None] = [
    None, None, None, None, None, None,
    "The reasoning looks right to me.",  # no score at all
    "Consistent.\nScore: 9",  # outside 1..5
    "Score: four",  # not a number
    "Score: 2\nScore: 5",  # two different scores
]
JUDGE_EXPECTED_REASON = {6: "judge_no_score", 7: "judge_score_out_of_range",
                         8: "judge_bad_score", 9: "judge_ambiguous_score"}


def judge_reply_of(identity: str) -> int:
    return int(identity[:8], 16) % len(JUDGE_REPLIES)


def judge_script(body: dict) -> str | None:
    return JUDGE_REPLIES[judge_reply_of(request_identity(body))]


# Per request identity: what the server does on attempt 1, 2, ... ("ok" after the list).
SCRIPTS: list[list[str]] = [
    ["ok"],
    ["429", "ok"],
    ["500", "503", "ok"],
    ["timeout", "ok"],
    ["drop", "ok"],
    ["malformed", "ok"],
    ["empty", "ok"],
    ["400"] * 10,  # permanent: not retried
    ["503"] * 10,  # outlives the retries: a transient rejection
    ["empty"] * 10,
]
EXPECTED_REASON = {7: "engine_error:http_400", 8: "engine_error:http_503",
                   9: "engine_error:empty_choices"}


def script_of(identity: str) -> int:
    """Which script an identity gets: a fixed hash, so runs are repeatable."""
    return int(identity[:8], 16) % len(SCRIPTS)


def faults(identity: str, attempt: int) -> str:
    """The fault plan the fault tests and the reliability bench use."""
    script = SCRIPTS[script_of(identity)]
    return script[attempt - 1] if attempt <= len(script) else "ok"


def request_identity(body: dict) -> str:
    """Stable across retries of one (sample, k) request: its messages and seed."""
    return hashlib.sha256(json.dumps([body.get("messages"), body.get("seed")],
                                     sort_keys=True).encode()).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: room for a burst of connections

    def handle_error(self, request: object, client_address: object) -> None:
        """A client killed on purpose (the kill tests) resets its connections: no noise."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class EngineServer:
    """``with EngineServer(engine) as server: server.base_url ...``"""

    def __init__(self, engine: Engine, *, faults: FaultPlan | None = None,
                 script: ReplyScript | None = None,
                 hang_s: float = 2.0, latency_s: float = 0.0, retry_after: str = "1",
                 echo_auth: bool = False, port: int = 0, slots: int | None = None,
                 max_lifetime_s: float = 300.0) -> None:
        self.engine = engine
        self.faults = faults
        self.script = script
        self.hang_s = hang_s
        self.latency_s = latency_s  # a model's think time, spent outside the engine lock
        # A server's capacity: at most this many requests think at once (a GPU's batch);
        # None: unbounded.
        self.slots = threading.Semaphore(slots) if slots else None
        self.retry_after = retry_after
        self.echo_auth = echo_auth
        self.max_lifetime_s = max_lifetime_s
        self.port = port  # 0: any free port; a restarted server passes its old one
        self.connections: set[socket.socket] = set()  # open client connections (for kill)
        self.dead = False
        self.answered: Counter = Counter()  # identity -> answers sent whole
        self.lock = threading.Lock()
        self.engine_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts: Counter = Counter()  # identity -> attempts seen
        self.actions: dict[str, list[str]] = defaultdict(list)  # identity -> actions taken
        self.times: dict[str, list[float]] = defaultdict(list)  # identity -> arrival times
        self.auth_headers: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> EngineServer:
        handler = _make_handler(self)
        self._server = _Server(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def kill(self) -> None:
        """Die like a crashed server: stop listening and cut every open connection, so
        requests in flight get no answer."""
        self.dead = True  # handlers still running answer no more
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.stop()

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.kill()

    # -- request handling -----------------------------------------------------------------

    def decide(self, body: dict) -> tuple[str, str]:
        identity = request_identity(body)
        with self.lock:
            self.attempts[identity] += 1
            attempt = self.attempts[identity]
            action = self.faults(identity, attempt) if self.faults else "ok"
            self.actions[identity].append(action)
            self.times[identity].append(time.monotonic())
        return identity, action

    def answer(self, body: dict) -> dict:
        scripted = self.script(body) if self.script else None
        if scripted is not None:
            return {"id": "chatcmpl-test", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": scripted}}],
                    "usage": None}
        system, user, images = "", "", []
        for message in body["messages"]:
            content = message["content"]
            if message["role"] == "system":
                system = content if isinstance(content, str) else ""
                continue
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                if part["type"] == "text":
                    user += part["text"]
                elif part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    images.append(base64.b64decode(url.split(",", 1)[1]))
        sampling = SamplingParams(temperature=float(body.get("temperature", 0.0)),
                                  top_p=float(body.get("top_p", 1.0)),
                                  max_tokens=int(body.get("max_tokens", 256)),
                                  seed=body.get("seed"))
        request = ChatRequest(id="r", system=system, user=user, images=tuple(images),
                              sampling=sampling, ks=(0,))
        with self.engine_lock:
            [outcome] = list(self.engine.generate([request]))
        result = outcome.results[0]
        assert isinstance(result, Completion), result
        # Servers always report usage (clients like Curator read it); an engine that
        # counts no tokens (the digit readers) is reported as whitespace words.
        prompt_tokens = result.prompt_tokens if result.prompt_tokens is not None else \
            len(f"{system} {user}".split())
        completion_tokens = result.completion_tokens \
            if result.completion_tokens is not None else len(result.text.split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": result.finish_reason,
                             "message": {"role": "assistant", "content": result.text}}],
                "usage": usage or None}


def _make_handler(server: EngineServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm
        # and delayed ACKs add ~40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with server.lock:
                server.connections.add(self.connection)

        def finish(self) -> None:
            with server.lock:
                server.connections.discard(self.connection)
            with contextlib.suppress(OSError):  # a connection the test cut
                super().finish()

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, OSError):  # a connection cut mid-body (a killed server)
                self.close_connection = True
                return
            auth = self.headers.get("Authorization", "")
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if auth:
                    server.auth_headers.add(auth)
            self.counted = True
            try:
                self._handle(body, auth)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                self._uncount()

        def _uncount(self) -> None:
            with server.lock:
                if self.counted:
                    server.in_flight -= 1
                    self.counted = False

        def _handle(self, body: dict, auth: str) -> None:
            if not self.path.endswith("/chat/completions"):
                self._send(404, b'{"error": "not found"}')
                return
            if not body.get("messages"):  # as OpenAI answers a probe (Curator sends one)
                self._send(400, b'{"error": {"message": "Empty input messages"}}')
                return
            _, action = server.decide(body)
            echo = f" (you sent {auth})" if server.echo_auth and auth else ""
            if action == "ok":
                if server.slots is not None:
                    with server.slots:
                        time.sleep(server.latency_s)
                else:
                    time.sleep(server.latency_s)
                if server.dead:
                    raise ConnectionResetError("killed")
                self._send(200, json.dumps(server.answer(body)).encode())
                with server.lock:
                    server.answered[request_identity(body)] += 1
            elif action == "429":
                self._send(429, f'{{"error": "rate limited{echo}"}}'.encode(),
                           {"Retry-After": server.retry_after})
            elif action in ("500", "503", "400"):
                self._send(int(action), f'{{"error": "injected {action}{echo}"}}'.encode())
            elif action == "timeout":
                # The client gives up on this one and retries; it no longer holds a slot
                # of the client's concurrency, so it stops counting as in flight.
                self._uncount()
                time.sleep(server.hang_s)
                self._send(200, json.dumps(server.answer(body)).encode())
            elif action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif action == "malformed":
                self._send(200, b'{"choices": [{"message": {"content": "tru')
            elif action == "empty":
                self._send(200, b'{"id": "x", "choices": [], "usage": null}')
            else:
                raise ValueError(f"unknown fault action {action!r}")

    return Handler
