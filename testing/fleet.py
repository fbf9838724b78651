"""The fleet scenario shared by tests/test_generate_fleet.py and bench/scale_out.py:
`distill generate` with an openai teacher over N loopback servers, optionally killing
one mid-request and restarting it on its port."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill.generate.engines.base import Engine
from distill.generate.runner import GenerateOptions, run_generate
from testing.generate import content_set, leftovers, read_outputs, write_teachers
from testing.openai_server import EngineServer


def fleet_teachers(path: Path, urls: list[str] | str, concurrency: int, k: int = 2) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": k,
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0},
        "options": {"base_url": urls, "api_key_env": None, "max_concurrency": concurrency,
                    "timeout_s": 5.0, "max_attempts": 3, "backoff_initial_s": 0.01,
                    "backoff_max_s": 0.05, "server_cooldown_s": 0.2,
                    "server_cooldown_max_s": 0.4}}})


class Chaos:
    """Kill server ``victim`` once it has answered ``kill_at`` requests and holds one in
    flight; restart it on its port once the others have answered ``restart_at`` more."""

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


@dataclass
class FleetRun:
    requests: int
    seconds: float
    keys: list[str]
    rejects: int
    content: set[str]
    answered: list[int]  # per server, before any restart
    after_restart: int | None  # answers of the restarted server (None: no chaos)
    reasked: int  # requests sent beyond one per key
    twice: int  # answers delivered twice
    leftovers: list[Path] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_fleet(samples_dir: Path, root: Path, engine: Engine, *, servers: int, samples: int,
              k: int = 2, concurrency: int = 6, latency_s: float = 0.02,
              slots: int | None = None, chaos: bool = True) -> FleetRun:
    fleet = [EngineServer(engine, latency_s=latency_s, slots=slots).__enter__()
             for _ in range(servers)]
    trouble = Chaos(fleet, victim=1, kill_at=8, restart_at=20) if chaos else None
    out = root / "out"
    try:
        if trouble:
            trouble.thread.start()
        teachers = fleet_teachers(root / "teachers.yaml", [s.base_url for s in fleet],
                                  concurrency, k)
        start = time.perf_counter()
        run_generate(GenerateOptions(samples_dir, str(teachers), out))
        seconds = time.perf_counter() - start
    finally:
        if trouble:
            trouble.stop.set()
            trouble.thread.join()
        for server in [*fleet, trouble.restarted if trouble else None]:
            if server is not None:
                server.__exit__()
    if trouble:
        assert trouble.killed_after is not None and trouble.restarted is not None, \
            "the victim was not killed and restarted while the run was working"
    traces, rejects = read_outputs(out)
    everyone = [*fleet, *([trouble.restarted] if trouble else [])]
    requests = samples * k
    return FleetRun(
        requests=requests, seconds=seconds, keys=[t.trace_key for t in traces],
        rejects=len(rejects), content=content_set(traces),
        answered=[sum(s.answered.values()) for s in fleet],
        after_restart=sum(trouble.restarted.answered.values()) if trouble else None,
        reasked=sum(len(a) for s in everyone for a in s.actions.values()) - requests,
        twice=sum(sum(s.answered.values()) for s in everyone) - requests,
        leftovers=leftovers(out))
