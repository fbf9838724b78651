"""The openai engine against a real HTTP server on loopback, with injected faults.

The server answers with a real teacher (the built-in kNN digit reader reads the image
from the data URL) and misbehaves deterministically per request identity and attempt.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from distill.generate.engines.base import ChatRequest
from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.engines.hf import HFOptions
from distill.generate.engines.openai import parse_retry_after
from distill.generate.engines.vllm import VLLMOptions
from distill.generate.runner import GenerateOptions, run_generate
from distill.schemas import SamplingParams
from testing.generate import leftovers, make_ingest, read_outputs, write_teachers
from testing.openai_server import (
    EXPECTED_REASON,
    SCRIPTS,
    EngineServer,
    faults,
    script_of,
)

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "DISTILL_TEST_API_KEY"
SECRET = "sk-test-5f3c9a1e-never-print-me"
MAX_ATTEMPTS = 4

@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("ingest") / "d", {"val": 30})


@pytest.fixture(scope="module")
def reader() -> BuiltinDigitsEngine:
    return BuiltinDigitsEngine("knn", BuiltinOptions())


def _teachers(path: Path, base_url: str, k: int = 2, concurrency: int = 4,
              timeout_s: float = 0.5) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": k,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0},
        "options": {"base_url": base_url, "api_key_env": KEY_ENV,
                    "max_concurrency": concurrency, "timeout_s": timeout_s,
                    "max_attempts": MAX_ATTEMPTS, "backoff_initial_s": 0.01,
                    "backoff_max_s": 0.05},
    }})


def test_faults_end_as_traces_or_rejections_exactly_once(samples_dir, reader, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    out = tmp_path / "gen"
    with EngineServer(reader, faults=faults, hang_s=1.0) as server:
        teachers = _teachers(tmp_path / "t.yaml", server.base_url)
        run_generate(GenerateOptions(samples_dir, str(teachers), out))
    traces, rejects = read_outputs(out)
    requested = 30 * 2
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == requested == len(server.actions)
    # Each identity was tried exactly as its script says, no more: no duplicate requests.
    expected_reasons: Counter = Counter()
    for identity, actions in server.actions.items():
        script = script_of(identity)
        if script == 7:
            assert actions == ["400"]
        elif script in (8, 9):
            assert len(actions) == MAX_ATTEMPTS
        else:
            assert actions == SCRIPTS[script]
        if script in EXPECTED_REASON:
            expected_reasons[EXPECTED_REASON[script]] += 1
    assert Counter(r.reason for r in rejects) == expected_reasons
    assert len(traces) == requested - sum(expected_reasons.values())
    assert {r.permanent for r in rejects if r.reason.endswith("http_400")} <= {True}
    assert {r.permanent for r in rejects if not r.reason.endswith("http_400")} <= {False}
    # Every fault kind really happened, Retry-After was honoured, the limit was kept.
    seen = {a for actions in server.actions.values() for a in actions}
    assert seen == set(ACTIONS_USED)
    for identity, actions in server.actions.items():
        if actions[0] == "429":
            gap = server.times[identity][1] - server.times[identity][0]
            assert gap >= 0.95, f"Retry-After: 1 not honoured ({gap:.2f} s)"
    assert 2 <= server.max_in_flight <= 4
    assert server.auth_headers == {f"Bearer {SECRET}"}
    tried = Counter(a for actions in server.actions.values() for a in actions if a != "ok")
    print(f"\nengine faults: {sum(tried.values())} on {requested} requests "
          f"({dict(sorted(tried.items()))}); {len(traces)} traces + {len(rejects)} "
          "rejections, 0 lost, 0 twice")

    # Next run, a healthy server: transient rejections are retried, permanent ones are not.
    with EngineServer(reader) as healthy:
        teachers = _teachers(tmp_path / "t.yaml", healthy.base_url)
        summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
    retried = {i for i in healthy.actions}
    assert {script_of(i) for i in retried} <= {8, 9}
    assert len(retried) == expected_reasons["engine_error:http_503"] + expected_reasons[
        "engine_error:empty_choices"]
    assert summary.shards_reopened == 1
    traces, rejects = read_outputs(out)
    assert {r.reason for r in rejects} <= {"engine_error:http_400"}
    assert len(traces) + len(rejects) == requested == len({t.trace_key for t in traces}
                                                          | {r.key for r in rejects})

    # --retry-rejected asks the permanent ones again.
    with EngineServer(reader) as healthy:
        teachers = _teachers(tmp_path / "t.yaml", healthy.base_url)
        run_generate(GenerateOptions(samples_dir, str(teachers), out, retry_rejected=True))
    traces, rejects = read_outputs(out)
    assert not rejects and len({t.trace_key for t in traces}) == len(traces) == requested
    assert not leftovers(out)


ACTIONS_USED = ["ok", "429", "500", "503", "timeout", "drop", "malformed", "empty", "400"]


def test_api_key_never_reaches_logs_outputs_or_errors(samples_dir, reader, tmp_path):
    """A server that echoes the Authorization header into its error bodies, a debug log,
    permanent and transient failures: the key is sent, and appears nowhere we write."""
    out = tmp_path / "gen"

    def rude(identity: str, attempt: int) -> str:
        return ["400", "503", "429", "ok"][script_of(identity) % 4]

    with EngineServer(reader, faults=rude, echo_auth=True, retry_after="0") as server:
        teachers = _teachers(tmp_path / "t.yaml", server.base_url)
        env = {**os.environ, KEY_ENV: SECRET, "DISTILL_PROGRESS": "0",
               "PYTHONPATH": str(REPO)}
        run = subprocess.run([sys.executable, "-m", "distill", "-vv", "generate",
                              "--samples", str(samples_dir), "--teachers", str(teachers),
                              "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert server.auth_headers == {f"Bearer {SECRET}"}  # it was really used
    assert "retrying after" in run.stderr  # debug logging was on
    _, rejects = read_outputs(out)
    assert any("***" in r.message for r in rejects)  # the echo was there, masked
    written = [p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()]
    for text in [run.stdout, run.stderr, *written]:
        assert SECRET not in text


def test_trust_remote_code_is_off_unless_asked():
    assert HFOptions().trust_remote_code is False
    assert VLLMOptions().trust_remote_code is False


def test_retry_after_header_forms():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0


def test_load_64_concurrent_requests_all_accounted_for(tmp_path, reader):
    """A short load test: 64 requests on the wire at once, a bounded count, every one
    accounted for; prints the throughput."""
    samples_dir = make_ingest(tmp_path / "d", {"val": 120})
    out = tmp_path / "gen"
    with EngineServer(reader, latency_s=0.05) as server:
        teachers = _teachers(tmp_path / "t.yaml", server.base_url, k=4, concurrency=64,
                             timeout_s=30.0)
        start = time.perf_counter()
        summary = run_generate(GenerateOptions(samples_dir, str(teachers), out))
        seconds = time.perf_counter() - start
    traces, rejects = read_outputs(out)
    requested = 120 * 4
    assert summary.traces + summary.rejected == requested == len(traces) + len(rejects)
    assert len({t.trace_key for t in traces} | {r.key for r in rejects}) == requested
    assert sum(server.attempts.values()) == requested  # no retries, no duplicates
    assert 32 < server.max_in_flight <= 64
    print(f"\nload: {requested} requests at concurrency 64 in {seconds:.2f} s = "
          f"{requested / seconds:.0f} req/s, max in flight {server.max_in_flight}")


# --- replies a server should never send: each costs its request, never the run ------------

GOOD = b'{"choices": [{"message": {"content": "Answer: 7"}, "finish_reason": "stop"}]}'
BAD_REPLIES: dict[str, tuple[dict[str, str], bytes]] = {
    "nested": ({}, b"[" * 200_000 + b"]" * 200_000),
    "null_text": ({}, b'{"choices": [{"message": {"content": [{"type": "text", "text": null}]},'
                      b' "finish_reason": "stop"}]}'),
    "number_content": ({}, b'{"choices": [{"message": {"content": 12}}]}'),
    "false_gzip": ({"Content-Encoding": "gzip"}, GOOD),
    "latin1": ({}, '{"choices": [{"message": {"content": "caf\u00e9"}}]}'.encode("latin-1")),
}


class _RudeHandler:
    """A loopback server whose reply depends on the mode named in the request's text:
    a bad body, or (``trickle``) good headers then one byte every 0.3 s."""

    @staticmethod
    def make():
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                mode = next((m for m in [*BAD_REPLIES, "trickle"] if f"mode={m}" in body), "")
                headers, payload = BAD_REPLIES.get(mode, ({}, GOOD))
                if mode == "trickle":
                    payload = GOOD
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if mode != "trickle":
                    self.wfile.write(payload)
                    return
                try:
                    for i in range(len(payload)):  # ~20 s in all: far past any timeout
                        self.wfile.write(payload[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.3)
                except OSError:  # the client gave up, as it should
                    pass

        return Handler


@pytest.fixture(scope="module")
def rude_server():
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), _RudeHandler.make())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _ask(mode: str) -> ChatRequest:
    return ChatRequest(id=mode, system="", user=f"mode={mode}", images=(),
                       sampling=SamplingParams(max_tokens=8), ks=(0,))


def test_a_bad_reply_costs_its_request_never_the_run(rude_server):
    from distill.generate.engines.base import Completion, EngineFailure
    from distill.generate.engines.openai import OpenAIEngine, OpenAIOptions

    engine = OpenAIEngine("m", OpenAIOptions(base_url=rude_server, api_key_env=None,
                                             max_attempts=1, timeout_s=5, max_concurrency=8))
    modes = [*BAD_REPLIES, "fine"]
    got = {o.request.id: o.results[0] for o in engine.generate([_ask(m) for m in modes])}
    assert set(got) == set(modes)
    assert isinstance(got["fine"], Completion) and got["fine"].text == "Answer: 7"
    for mode in ("nested", "number_content", "false_gzip", "latin1"):
        assert isinstance(got[mode], EngineFailure), mode
        assert got[mode].reason == "engine_error:bad_response" and not got[mode].permanent
    # A text part holding null adds no text: an empty reply (unparseable later), no crash.
    assert isinstance(got["null_text"], Completion) and got["null_text"].text == ""


def test_timeout_bounds_the_whole_request_not_each_read(rude_server):
    from distill.generate.engines.base import EngineFailure
    from distill.generate.engines.openai import OpenAIEngine, OpenAIOptions

    engine = OpenAIEngine("m", OpenAIOptions(base_url=rude_server, api_key_env=None,
                                             max_attempts=1, timeout_s=1.0))
    start = time.monotonic()
    [outcome] = list(engine.generate([_ask("trickle")]))
    elapsed = time.monotonic() - start
    assert isinstance(outcome.results[0], EngineFailure)
    assert outcome.results[0].reason == "engine_error:timeout"
    assert elapsed < 6, f"a 1 s timeout held a trickling reply for {elapsed:.1f} s"
