"""A simulated continuous-batching engine that costs time the way vLLM on a GPU does.

On a GPU, decoding is memory-bound: one decode step costs about the same for the whole
running batch, 1 sequence or ``max_num_seqs`` of them; prefill costs per prompt token. So
an engine that is not kept full wastes GPU time at every tail and gap, which a CPU build
of vLLM cannot show (CPU decoding is compute-bound). ``SimCore`` is that cost model, run
in real time on its own thread (as vLLM V1 runs its engine core in its own process):

- each step admits waiting requests (FIFO) while fewer than ``max_num_seqs`` run and the
  step's prefill tokens fit ``max_batched_tokens`` (vLLM's chunked-prefill budget), then
  costs ``decode_step_s + prefill_tokens x prefill_s_per_token``, and every running
  sequence gains one token; a sequence finishes when it has its length;
- its clock is a chain of deadlines while it has work (a late wake-up is caught up, as a
  GPU's steps do not wait on the feeding process), reset whenever it goes idle;
- ``time_scale`` shrinks every cost by the same factor, so a benchmark of thousands of
  requests runs in seconds (which makes the feeding code's own cost relatively larger
  than on a real GPU: the figures it gives are conservative).

The default profile is a real teacher's, published: ``PROFILES`` names the source.

``SimLLM`` puts that core behind the part of vLLM's ``LLM`` the ``vllm`` engine uses
(``chat``, ``enqueue_chat``, ``llm_engine.step/has_unfinished_requests/abort_request``,
``llm_engine.vllm_config.scheduler_config.max_num_seqs``), and ``SimVLLMEngine`` is the
real ``VLLMEngine`` with ``SimLLM`` loaded in place of ``vllm.LLM``: every line that feeds
it is the code that feeds vLLM. ``serve`` puts the same core behind an OpenAI-compatible
HTTP server on loopback (``python -m testing.sim_vllm --port N``).

Output lengths are long-tailed: each request's length is drawn from a log-normal by a
hash of what it asks (its messages and seed), so a request has the same length however
and whenever it is fed, capped at its ``max_tokens``; prompts count their text (4
characters a token) plus ``IMAGE_TOKENS`` an image. Replies are the built-in digit
readers' wording, so they parse into traces.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
from types import SimpleNamespace
from typing import Any, ClassVar

from distill.generate.engines.builtin import question_kind, rationale
from distill.generate.engines.vllm import VLLMEngine

IMAGE_TOKENS = 256  # a 448x448 image in Qwen2.5-VL: (448 / 28)^2 tokens


@dataclass(frozen=True)
class Profile:
    name: str
    decode_step_s: float
    prefill_s_per_token: float
    source: str


# Qwen's own vLLM speed benchmark (QwenLM/Qwen2.5, docs/source/benchmark/speed_benchmark.rst
# @010c37c3): Qwen2.5-72B-Instruct, BF16, 4 x A100 80GB, vLLM 0.6.3, batch size 1, 2048
# tokens generated after inputs of 1, 6144, 14336 and 30720 tokens: 31.37, 29.90, 30.10
# and 27.53 tokens/s. At batch 1 a decode step is 1 / 31.37 s = 31.9 ms; the least-squares
# slope of the run times (65.3, 68.5, 68.0, 74.4 s) over input length is 0.275 ms per
# prompt token, an upper bound on prefill (it includes decoding at a longer context).
PROFILES: dict[str, Profile] = {
    "qwen2.5-72b-4xa100": Profile(
        "Qwen2.5-72B-Instruct BF16, 4xA100-80GB, vLLM 0.6.3", decode_step_s=1 / 31.37,
        prefill_s_per_token=0.000275,
        source="QwenLM/Qwen2.5 docs/source/benchmark/speed_benchmark.rst @010c37c3"),
}


@dataclass
class Sequence:
    prompt_tokens: int
    length: int
    on_done: Callable[[Sequence], None]
    made: int = 0


@dataclass
class SimCore:
    """The engine's scheduler and its clock (see the module docstring)."""

    profile: Profile
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    time_scale: float = 1.0
    waiting: deque[Sequence] = field(default_factory=deque)
    running: list[Sequence] = field(default_factory=list)
    tokens: int = 0  # output tokens made
    steps: int = 0
    busy_s: float = 0.0  # simulated time spent stepping

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="sim-engine-core", daemon=True)
        self.thread.start()

    def add(self, sequence: Sequence) -> None:
        with self.cond:
            self.waiting.append(sequence)
            self.cond.notify()

    def abort(self, sequences: list[Sequence]) -> None:
        gone = {id(s) for s in sequences}
        with self.cond:
            self.waiting = deque(s for s in self.waiting if id(s) not in gone)
            self.running = [s for s in self.running if id(s) not in gone]

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.thread.join(timeout=5)

    def _admit(self) -> int:
        """Move waiting sequences into the running batch; their prefill tokens."""
        budget = self.max_batched_tokens - len(self.running)
        prefill = 0
        while self.waiting and len(self.running) < self.max_num_seqs:
            head = self.waiting[0]
            if prefill and prefill + head.prompt_tokens > budget:
                break
            self.running.append(self.waiting.popleft())
            prefill += head.prompt_tokens
        return prefill

    def _loop(self) -> None:
        deadline: float | None = None
        while True:
            with self.cond:
                while not (self.waiting or self.running or self.stopped):
                    deadline = None  # idle: the clock does not bank the time
                    self.cond.wait()
                if self.stopped:
                    return
                prefill = self._admit()
                cost = self.profile.decode_step_s + prefill * self.profile.prefill_s_per_token
            now = time.monotonic()
            deadline = (deadline if deadline is not None else now) + cost * self.time_scale
            if deadline > now:
                time.sleep(deadline - now)
            finished = []
            with self.cond:
                self.steps += 1
                self.busy_s += cost
                self.tokens += len(self.running)
                for sequence in self.running:
                    sequence.made += 1
                finished = [s for s in self.running if s.made >= s.length]
                self.running = [s for s in self.running if s.made < s.length]
            for sequence in finished:
                sequence.on_done(sequence)


def output_length(identity: str, max_tokens: int, median: float, sigma: float) -> int:
    """A log-normal length drawn by the request's own hash (same request, same length)."""
    u = (int(hashlib.sha256(identity.encode()).hexdigest()[:12], 16) + 0.5) / 16 ** 12
    return max(1, min(max_tokens, round(median * math.exp(sigma * NormalDist().inv_cdf(u)))))


def request_identity(messages: list[dict], seed: int | None) -> tuple[str, int, str]:
    """(identity, prompt tokens, user text) of a chat request: its texts and images."""
    texts, images = [], []
    for message in messages:
        content = message["content"]
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images.append(hashlib.sha256(part["image_url"]["url"].encode()).hexdigest())
    prompt_tokens = sum(len(t) for t in texts) // 4 + IMAGE_TOKENS * len(images)
    identity = json.dumps([texts, images, seed])
    user = texts[-1] if texts else ""
    return identity, prompt_tokens, user


def reply_text(user: str) -> str:
    """A reply in the built-in digit readers' words, so that it parses."""
    kind = question_kind(user)
    return rationale(kind, [3, 1, 4]) if kind else "Answer: 3"


@dataclass
class Lengths:
    """The output-length distribution: log-normal, ``median`` tokens, spread ``sigma``."""

    median: float = 300.0
    sigma: float = 0.9


# --- vLLM's LLM, simulated ---------------------------------------------------------------


class SimLLM:
    """The part of ``vllm.LLM`` the ``vllm`` engine uses, over a ``SimCore``."""

    def __init__(self, core: SimCore, lengths: Lengths) -> None:
        self.core = core
        self.lengths = lengths
        self.counter = itertools.count()
        self.cond = threading.Condition()
        self.finished: list[SimpleNamespace] = []
        self.unfinished: dict[str, list[Sequence]] = {}  # external id -> its sequences
        self.served: list[tuple[int, int]] = []  # (prompt tokens, output tokens) of each
        self.llm_engine = self
        self.vllm_config = SimpleNamespace(
            scheduler_config=SimpleNamespace(max_num_seqs=core.max_num_seqs))

    # LLM
    def enqueue_chat(self, messages: list[list[dict]], params: list[Any], use_tqdm: bool = False,
                     chat_template: str | None = None) -> list[str]:
        return [self._add(conversation, p) for conversation, p in zip(messages, params,
                                                                      strict=True)]

    def chat(self, messages: list[list[dict]], params: list[Any], use_tqdm: bool = False,
             chat_template: str | None = None) -> list[SimpleNamespace]:
        """Everything at once, then wait for all of it (``LLM._run_engine``)."""
        ids = {_external(i) for i in self.enqueue_chat(messages, params)}
        outputs = []
        while ids:
            for output in self.step():
                if output.request_id in ids:
                    ids.discard(output.request_id)
                    outputs.append(output)
        return sorted(outputs, key=lambda o: int(o.request_id))

    # LLMEngine
    def step(self) -> list[SimpleNamespace]:
        with self.cond:
            if not self.finished:
                self.cond.wait(timeout=max(0.001, self.core.profile.decode_step_s
                                           * self.core.time_scale))
            done, self.finished = self.finished, []
        return done

    def has_unfinished_requests(self) -> bool:
        with self.cond:
            return bool(self.unfinished or self.finished)

    def abort_request(self, request_ids: list[str]) -> None:
        with self.cond:
            sequences = [s for i in request_ids for s in self.unfinished.pop(i, [])]
        self.core.abort(sequences)

    def _add(self, messages: list[dict], params: Any) -> str:
        external = str(next(self.counter))
        identity, prompt_tokens, user = request_identity(messages, params.seed)
        text = reply_text(user)
        remaining = [params.n]
        lengths: list[int] = []

        def done(sequence: Sequence) -> None:
            with self.cond:
                remaining[0] -= 1
                if remaining[0] or external not in self.unfinished:
                    return
                del self.unfinished[external]
                self.served.append((prompt_tokens, sum(lengths)))
                self.finished.append(SimpleNamespace(
                    request_id=external, finished=True, prompt_token_ids=[0] * prompt_tokens,
                    outputs=[SimpleNamespace(text=text, finish_reason="stop",
                                             token_ids=[0] * length) for length in lengths]))
                self.cond.notify_all()

        sequences = []
        for k in range(params.n):
            length = output_length(f"{identity}/{k}", params.max_tokens, self.lengths.median,
                                   self.lengths.sigma)
            lengths.append(length)
            sequences.append(Sequence(prompt_tokens, length, done))
        with self.cond:
            self.unfinished[external] = sequences
        for sequence in sequences:
            self.core.add(sequence)
        return f"{external}-{random.getrandbits(32):08x}"  # vLLM's internal id shape


def _external(request_id: str) -> str:
    return request_id.rpartition("-")[0]


class SimVLLMEngine(VLLMEngine):
    """The ``vllm`` engine with ``SimLLM`` in place of ``vllm.LLM``. Its simulation
    settings travel in the teacher's ``engine_args``: ``profile``, ``max_num_seqs``,
    ``max_batched_tokens``, ``time_scale``, ``median_tokens``, ``sigma``."""

    name: ClassVar[str] = "sim-vllm"

    def load(self, args: dict[str, Any]) -> tuple[Any, Any]:
        core = SimCore(PROFILES[args.get("profile", "qwen2.5-72b-4xa100")],
                       max_num_seqs=int(args.get("max_num_seqs", 256)),
                       max_batched_tokens=int(args.get("max_batched_tokens", 8192)),
                       time_scale=float(args.get("time_scale", 1.0)))
        lengths = Lengths(float(args.get("median_tokens", 300)), float(args.get("sigma", 0.9)))
        return SimpleNamespace(SamplingParams=_SamplingParams), SimLLM(core, lengths)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.core.stop()
        self.llm = None


@dataclass
class _SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


# --- the same core behind an OpenAI-compatible server -----------------------------------


def serve(core: SimCore, lengths: Lengths, port: int, max_lifetime_s: float) -> None:
    """POST /v1/chat/completions answered through ``core``; GET /stats its counters. Binds
    127.0.0.1 only and stops by itself after ``max_lifetime_s``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send(200, {"tokens": core.tokens, "steps": core.steps,
                             "busy_s": core.busy_s})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            identity, prompt_tokens, user = request_identity(body["messages"],
                                                             body.get("seed"))
            length = output_length(f"{identity}/0", int(body.get("max_tokens", 16)),
                                   lengths.median, lengths.sigma)
            done = threading.Event()
            core.add(Sequence(prompt_tokens, length, lambda _: done.set()))
            done.wait()
            self._send(200, {
                "id": "chatcmpl-sim", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply_text(user)}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": length,
                          "total_tokens": prompt_tokens + length}})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    server = Server(("127.0.0.1", port), Handler)
    timer = threading.Timer(max_lifetime_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        core.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", default="qwen2.5-72b-4xa100", choices=sorted(PROFILES))
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-batched-tokens", type=int, default=8192)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--median-tokens", type=float, default=300)
    parser.add_argument("--sigma", type=float, default=0.9)
    parser.add_argument("--max-lifetime-s", type=float, default=1800)
    args = parser.parse_args()
    core = SimCore(PROFILES[args.profile], args.max_num_seqs, args.max_batched_tokens,
                   args.time_scale)
    print(f"sim engine on 127.0.0.1:{args.port} pid {os.getpid()}", flush=True)
    serve(core, Lengths(args.median_tokens, args.sigma), args.port, args.max_lifetime_s)


if __name__ == "__main__":
    main()
