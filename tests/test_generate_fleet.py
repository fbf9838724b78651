"""The openai engine over three servers on loopback with no load balancer: one is killed
mid-run and restarted on its port. Nothing is lost, nothing is written twice, the load is
spread by requests in flight, and the restarted server is used again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.engines.openai import OpenAIOptions
from distill.generate.runner import GenerateOptions, run_generate
from tests.helpers.generate import content_set, leftovers, make_ingest, read_outputs, write_teachers
from tests.helpers.openai_server import EngineServer

SAMPLES, K = 60, 2
REQUESTS = SAMPLES * K


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("fleet") / "ingest", {"val": SAMPLES},
                       shard_size=20)


def fleet_teachers(path: Path, urls: list[str] | str, concurrency: int = 6) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": K,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0},
        "options": {"base_url": urls, "api_key_env": None, "max_concurrency": concurrency,
                    "timeout_s": 5.0, "max_attempts": 3, "backoff_initial_s": 0.01,
                    "backoff_max_s": 0.05, "server_cooldown_s": 0.2,
                    "server_cooldown_max_s": 0.4}}})


class Chaos:
    """Kill server ``victim`` once it has answered ``kill_at`` requests, with a request in
    flight; restart it on its
    port once the others have answered ``restart_at`` more."""

    def __init__(self, servers: list[EngineServer], victim: int, kill_at: int,
                 restart_at: int) -> None:
        self.servers, self.victim = servers, victim
        self.kill_at, self.restart_at = kill_at, restart_at
        self.killed_after: int | None = None
        self.restarted: EngineServer | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _others(self) -> int:
        return sum(sum(s.answered.values()) for i, s in enumerate(self.servers)
                   if i != self.victim)

    def _run(self) -> None:
        victim = self.servers[self.victim]
        # Mid-request: once it has answered kill_at and holds a request in flight.
        while sum(victim.answered.values()) < self.kill_at or victim.in_flight < 1:
            if self.stop.wait(0.001):
                return
        victim.kill()
        self.killed_after = self._others()
        while self._others() < self.killed_after + self.restart_at:
            if self.stop.wait(0.002):
                return
        self.restarted = EngineServer(victim.engine, latency_s=victim.latency_s,
                                      port=victim.port).__enter__()


def test_three_servers_one_killed_and_restarted(samples_dir, tmp_path):
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    with EngineServer(reader) as single:  # the reference: one healthy server
        reference = tmp_path / "reference"
        run_generate(GenerateOptions(samples_dir, str(fleet_teachers(
            tmp_path / "one.yaml", single.base_url)), reference))
    servers = [EngineServer(reader, latency_s=0.02).__enter__() for _ in range(3)]
    chaos = Chaos(servers, victim=1, kill_at=8, restart_at=20)
    out = tmp_path / "fleet"
    try:
        chaos.thread.start()
        start = time.perf_counter()
        summary = run_generate(GenerateOptions(samples_dir, str(fleet_teachers(
            tmp_path / "fleet.yaml", [s.base_url for s in servers])), out))
        seconds = time.perf_counter() - start
    finally:
        chaos.stop.set()
        chaos.thread.join()
        for server in [*servers, chaos.restarted]:
            if server is not None:
                server.__exit__()
    assert chaos.killed_after is not None and chaos.restarted is not None, \
        "the victim was not killed and restarted while the run was working"
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces]
    assert not rejects and len(keys) == len(set(keys)) == REQUESTS  # nothing lost or twice
    assert content_set(traces) == content_set(read_outputs(reference)[0])
    assert not leftovers(out)
    answered = [sum(s.answered.values()) for s in servers]
    after_restart = sum(chaos.restarted.answered.values())
    assert all(n > 0 for n in answered), answered  # spread over all three
    assert after_restart > 0, "the restarted server was never used again"
    everyone = [*servers, chaos.restarted]
    twice = sum(sum(s.answered.values()) for s in everyone) - REQUESTS  # answered twice
    reasked = sum(len(a) for s in everyone for a in s.actions.values()) - REQUESTS
    assert 1 <= reasked <= 6  # what was in flight on the victim, asked again elsewhere
    assert twice == 0  # a killed server's answers never arrive
    rate = REQUESTS / seconds
    print(f"\nfleet: 3 servers, one killed after {answered[1]} answers and restarted: "
          f"{REQUESTS} requests in {seconds:.2f} s ({rate:.0f} req/s); answers per server "
          f"{answered} + {after_restart} after the restart; lost 0, duplicated 0, "
          f"re-asked {reasked} (answered twice by servers: {twice}); "
          f"shards {summary.shards_done}")


def test_base_url_lists_are_checked():
    assert OpenAIOptions(base_url=["http://a/v1", "http://b/v1"]).urls == ["http://a/v1",
                                                                          "http://b/v1"]
    with pytest.raises(ValueError, match="twice"):
        OpenAIOptions(base_url=["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="at least one"):
        OpenAIOptions(base_url=[])
