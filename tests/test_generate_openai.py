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

from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.engines.hf import HFOptions
from distill.generate.engines.openai import parse_retry_after
from distill.generate.engines.vllm import VLLMOptions
from distill.generate.runner import GenerateOptions, run_generate
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
