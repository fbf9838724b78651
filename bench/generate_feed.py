"""distill generate's output tokens/s against the engine's own ceiling, fed per shard
(before: --feed shard, main's path) and streamed (after: --feed stream), in one sitting.

The engine behaves as vLLM on a GPU does (``testing/sim_vllm.py``): a decode step costs
the same for the whole running batch up to ``max_num_seqs``, prefill costs per prompt
token, with the costs of a published profile of a real teacher (Qwen2.5-72B-Instruct on
4 x A100, vLLM 0.6.3: 31.9 ms a decode step, 0.275 ms a prompt token; the source is in
``PROFILES``), every cost scaled by ``--time-scale`` so that a run takes seconds. It is
served two ways, each by the real code that feeds the real thing:

- in process: ``SimVLLMEngine``, the ``vllm`` engine with a simulated ``vllm.LLM`` (the
  feed drives ``LLM.chat`` per shard, or ``enqueue_chat`` + ``llm_engine.step``);
- as an OpenAI-compatible server on 127.0.0.1 (a subprocess), fed by the ``openai`` engine.

The workload: ``--requests`` (2,048) digits items, one request each, whose output lengths
are log-normal (median 300 tokens, sigma 0.9, capped at max_tokens 2,048), in shards of 64
and of 512. The ceiling is the same engine fed every request at once (as ``vllm bench
throughput`` does), with the very prompt and output lengths the runs asked for. Each run
is a child process, so its peak RSS is its own: the streamed run's RSS is reported at 4
and at 128 shards.

    python bench/generate_feed.py             # ~10 minutes on 2 cores
    python bench/generate_feed.py --quick     # 512 requests, shards of 64 only

Last line: the headline, the streamed in-process ratio at shards of 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

from testing.generate import make_ingest  # noqa: E402
from testing.sim_vllm import PROFILES, Sequence, SimCore  # noqa: E402

PROFILE = "qwen2.5-72b-4xa100"
MAX_NUM_SEQS = 256
MAX_TOKENS = 2048
SERVER_CONCURRENCY = 384  # above the server's max_num_seqs, so it always has a queue


def sim_args(time_scale: float) -> dict:
    return {"profile": PROFILE, "max_num_seqs": MAX_NUM_SEQS, "time_scale": time_scale,
            "median_tokens": 300, "sigma": 0.9}


def teacher_set(path: Path, time_scale: float, base_url: str | None) -> Path:
    sampling = {"temperature": 0.7, "top_p": 1.0, "max_tokens": MAX_TOKENS, "seed": 0}
    if base_url is None:
        teacher = {"engine": "testing.sim_vllm:SimVLLMEngine", "model": "sim-72b",
                   "options": {"engine_args": sim_args(time_scale)}}
    else:
        teacher = {"engine": "openai", "model": "sim-72b",
                   "options": {"base_url": base_url, "api_key_env": None,
                               "max_concurrency": SERVER_CONCURRENCY, "timeout_s": 600}}
    path.write_text(yaml.safe_dump({"teachers": {"teacher": {
        **teacher, "prompt": "cot", "k": 1, "sampling": sampling}}}), encoding="utf-8")
    return path


# --- one run, in a child process ---------------------------------------------------------


def child(spec: dict) -> dict:
    """Run distill generate once; what it did, how long, its peak RSS."""
    os.environ["DISTILL_PROGRESS"] = "0"
    from distill.generate.runner import GenerateOptions, run_generate
    from distill.generate.stage import EngineCache

    engines = EngineCache()
    options = GenerateOptions(Path(spec["samples"]), spec["teachers"], Path(spec["out"]),
                              feed=spec["feed"])
    start = time.perf_counter()
    summary = run_generate(options, engines=engines)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {"seconds": seconds, "written": summary.written, "rejected": summary.rejected,
              "completion_tokens": summary.completion_tokens,
              "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}
    for engine in engines.engines.values():
        llm = getattr(engine, "llm", None)
        if llm is not None and hasattr(llm, "served"):
            report["tokens"] = llm.core.tokens
            report["served"] = llm.served
    engines.close()
    return report


def run_child(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0"}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SimServer:
    """The simulated engine behind an OpenAI-compatible server, in its own process."""

    def __init__(self, time_scale: float) -> None:
        self.port = free_port()
        args = sim_args(time_scale)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testing.sim_vllm", "--port", str(self.port),
             "--profile", args["profile"], "--max-num-seqs", str(args["max_num_seqs"]),
             "--time-scale", str(time_scale), "--median-tokens", str(args["median_tokens"]),
             "--sigma", str(args["sigma"]), "--max-lifetime-s", "3600"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/stats", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the simulated server did not start")

    def tokens(self) -> int:
        return int(httpx.get(self.url + "/stats", timeout=10).json()["tokens"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def ceiling(served: list[list[int]], time_scale: float) -> tuple[float, float]:
    """(seconds, output tokens/s) of the engine fed every request at once."""
    core = SimCore(PROFILES[PROFILE], max_num_seqs=MAX_NUM_SEQS, time_scale=time_scale)
    left = [len(served)]
    import threading

    done = threading.Event()

    def finished(_: Sequence) -> None:
        left[0] -= 1
        if not left[0]:
            done.set()

    start = time.perf_counter()
    for prompt_tokens, length in served:
        core.add(Sequence(prompt_tokens, length, finished))
    done.wait()
    seconds = time.perf_counter() - start
    tokens = core.tokens
    core.stop()
    return seconds, tokens / seconds


# --- the sitting -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--time-scale", type=float, default=1 / 16)
    parser.add_argument("--paths", default="in-process,server",
                        help="comma-separated: in-process, server")
    parser.add_argument("--feeds", default="shard,stream", help="comma-separated")
    parser.add_argument("--shard-sizes", help="comma-separated (default 64,512; --quick 64)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    requests = args.requests or (512 if args.quick else 2048)
    shard_sizes = [int(n) for n in args.shard_sizes.split(",")] if args.shard_sizes else \
        ([64] if args.quick else [64, 512])
    paths, feeds = args.paths.split(","), args.feeds.split(",")
    scale = args.time_scale
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"engine: simulated {PROFILES[PROFILE].name} (decode step "
          f"{PROFILES[PROFILE].decode_step_s * 1e3:.1f} ms, prefill "
          f"{PROFILES[PROFILE].prefill_s_per_token * 1e3:.3f} ms/token), max_num_seqs "
          f"{MAX_NUM_SEQS}, time scale {scale:g}; {requests} requests, log-normal output "
          f"lengths (median 300, sigma 0.9, cap {MAX_TOKENS})")
    root = Path(tempfile.mkdtemp(prefix="generate-feed-"))
    rows = []
    try:
        samples = {size: make_ingest(root / f"ingest-{size}", {"val": requests},
                                     shard_size=size)
                   for size in sorted({*shard_sizes, 16})}
        # The in-process streamed run at 128 shards comes first: it gives the ceiling its
        # requests (the very prompt and output lengths every run asks for) and its RSS.
        rss_row = one_run(root, samples[16], "in-process", 16, "stream", scale, requests)
        served = rss_row.pop("served")
        for path in paths:
            for size in shard_sizes:
                for feed in feeds:
                    row = one_run(root, samples[size], path, size, feed, scale, requests)
                    row.pop("served", None)
                    rows.append(row)
        ceiling_s, ceiling_tps = ceiling(served, scale)
        print(f"\nceiling (every request at once): {ceiling_s:.1f} s, "
              f"{ceiling_tps:,.0f} output tokens/s (scaled time)")
        print(f"\n{'path':<11} {'shards':>6} {'feed':<7} {'seconds':>8} {'tokens/s':>9} "
              f"{'of ceiling':>10} {'peak RSS':>9}")
        for row in rows:
            ratio = row["tokens_per_s"] / ceiling_tps
            row["ratio"] = ratio
            print(f"{row['path']:<11} {row['shard_size']:>6} {row['feed']:<7} "
                  f"{row['seconds']:>8.1f} {row['tokens_per_s']:>9,.0f} {ratio:>10.3f} "
                  f"{row['max_rss_mb']:>7.0f} MB")
        shards_big = -(-requests // max(shard_sizes))
        shards_small = -(-requests // 16)
        big = [r for r in rows if r["path"] == "in-process" and r["feed"] == "stream"
               and r["shard_size"] == max(shard_sizes)]
        print(f"\npeak RSS, streamed in process: {rss_row['max_rss_mb']:.0f} MB at "
              f"{shards_small} shards ({rss_row['tokens_per_s'] / ceiling_tps:.3f} of the "
              "ceiling)" + (f", {big[0]['max_rss_mb']:.0f} MB at {shards_big} shards"
                            if big else ""))
        head = [r for r in rows if r["feed"] == "stream" and r["shard_size"] == 64]
        if head:
            print("headline: streamed, shards of 64: " + ", ".join(
                f"{r['path']} {r['ratio']:.3f}" for r in head) + " of the engine's ceiling")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def one_run(root: Path, samples: Path, path: str, size: int, feed: str, scale: float,
            requests: int) -> dict:
    out = root / f"out-{path}-{size}-{feed}"
    server = SimServer(scale) if path == "server" else None
    try:
        teachers = teacher_set(root / f"teachers-{path}.yaml", scale,
                               f"{server.url}/v1" if server else None)
        before = server.tokens() if server else 0
        report = run_child({"samples": str(samples), "teachers": str(teachers),
                            "out": str(out), "feed": feed})
        tokens = server.tokens() - before if server else report["tokens"]
    finally:
        if server:
            server.stop()
    settled = report["written"] + report["rejected"]
    if settled != requests:
        raise RuntimeError(f"{path} {feed} {size}: {settled} of {requests} requests settled")
    shutil.rmtree(out, ignore_errors=True)
    row = {"path": path, "shard_size": size, "feed": feed, "seconds": report["seconds"],
           "tokens": tokens, "tokens_per_s": tokens / report["seconds"],
           "max_rss_mb": report["max_rss_mb"], "served": report.get("served")}
    print(f"  {path:<10} shards of {size:<4} {feed:<6}: {report['seconds']:6.1f} s, "
          f"{row['tokens_per_s']:8,.0f} tokens/s, {report['written']} traces, "
          f"{report['rejected']} rejections; the generating process used "
          f"{report.get('cpu_s', 0):.1f} CPU-s ({report.get('cpu_s', 0) / requests * 1e3:.1f} "
          "ms a request, the simulated engine's thread included in process)", flush=True)
    return row


if __name__ == "__main__":
    main()
