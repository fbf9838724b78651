"""`distill generate` side by side with Curator (bespokelabs-curator), the best-known peer
that does the same job: ask an OpenAI-compatible server for one completion per item, keep
the answers, survive being killed.

Both ask the same loopback server (the built-in kNN digit reader behind the OpenAI
protocol, ``testing/openai_server.py``, with the same think time per request) the
very same requests (the toolkit's rendered prompt and image data URL; the same sampling
and seed), at the same concurrency. Figures:

* requests/s for a whole run: from process start to exit ("wall", which counts each
  tool's start-up), and from the first request the server saw to the last ("serving");
  the most requests the server had in flight at once;
* SIGKILL once half the answers are in, then the same command again: records lost,
  duplicated (in the tool's final output) and re-asked (requests the server saw beyond
  one per item).

Curator runs in its own virtual environment as a subprocess (it pins its own litellm,
pydantic, datasets ...). Build it once:

    python3 -m venv /work/venvs/curator
    /work/venvs/curator/bin/pip install bespokelabs-curator==0.1.31

    python bench/generate_vs_curator.py            # 400 items, 3 kill seeds
    python bench/generate_vs_curator.py --quick    # 120 items, 1 kill seed
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.core.images import read_image_bytes  # noqa: E402
from distill.core.shards import iter_records, read_json_model  # noqa: E402
from distill.generate.engines.base import ChatRequest, openai_messages  # noqa: E402
from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions  # noqa: E402
from distill.generate.teachers import load_teacher_set  # noqa: E402
from distill.schemas import Sample, StageManifest  # noqa: E402
from testing.generate import make_ingest, read_outputs, write_teachers  # noqa: E402
from testing.openai_server import EngineServer  # noqa: E402

CURATOR_PYTHON = Path(os.environ.get("CURATOR_PYTHON", "/work/venvs/curator/bin/python"))
SAMPLING = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 128, "seed": 0}


def teachers_file(path: Path, base_url: str, concurrency: int) -> Path:
    return write_teachers(path, {"remote": {
        "engine": "openai", "model": "digits-knn", "prompt": "cot", "k": 1,
        "sampling": SAMPLING,
        "options": {"base_url": base_url, "api_key_env": None,
                    "max_concurrency": concurrency, "timeout_s": 60.0}}})


def write_requests(samples_dir: Path, teachers: Path, out: Path) -> int:
    """The requests the toolkit's openai engine sends, as Curator's input rows."""
    teacher = load_teacher_set(teachers).teachers["remote"]
    manifest = read_json_model(samples_dir / "manifest.json", StageManifest)
    rows = 0
    with open(out, "w", encoding="utf-8") as handle:
        for ref in manifest.shards:
            for sample in iter_records(samples_dir / ref.name, Sample):
                system, user = teacher.prompt.render(sample)
                image = read_image_bytes(sample.image, str(samples_dir))
                request = ChatRequest(id=sample.id, system=system, user=user, images=(image,),
                                      sampling=teacher.spec.sampling)
                handle.write(json.dumps({"id": sample.id, "messages": openai_messages(request),
                                         **SAMPLING}) + "\n")
                rows += 1
    return rows


class Tool:
    """How to run one tool and read what it kept."""

    def __init__(self, name: str, command: list[str], read: Callable[[], list[str]],
                 log: Path) -> None:
        self.name, self.command, self.read, self.log = name, command, read, log

    def start(self) -> subprocess.Popen:
        """Output goes to a file: a pipe nobody reads while waiting to kill would fill up
        and stall the tool."""
        env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO),
               "TELEMETRY_ENABLED": "false", "OPENAI_API_KEY": "sk-loopback"}
        with open(self.log, "a", encoding="utf-8") as log:
            return subprocess.Popen(self.command, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)

    def finish(self, process: subprocess.Popen) -> None:
        if process.wait(timeout=900) != 0:
            raise RuntimeError(f"{self.name} failed:\n{self.log.read_text()[-3000:]}")


def ours(samples_dir: Path, teachers: Path, out: Path, flush_every: int | None) -> Tool:
    command = [sys.executable, "-m", "distill", "generate", "--samples", str(samples_dir),
               "--teachers", str(teachers), "--out", str(out)]
    if flush_every is not None:
        command += ["--flush-every", str(flush_every)]
    label = "distill generate" + (f" --flush-every {flush_every}" if flush_every else "")

    def read() -> list[str]:
        traces, rejects = read_outputs(out)
        return [t.sample_id for t in traces] + [r.sample_id for r in rejects]

    return Tool(label, command, read, out.parent / "log.txt")


def curator(requests: Path, out: Path, cache: Path, base_url: str, concurrency: int) -> Tool:
    command = [str(CURATOR_PYTHON), str(REPO / "bench" / "curator_worker.py"), str(requests),
               str(out), "--base-url", base_url, "--concurrency", str(concurrency),
               "--cache-dir", str(cache)]

    def read() -> list[str]:
        if not out.exists():
            return []
        return [json.loads(line)["id"] for line in out.read_text().splitlines()]

    return Tool("curator 0.1.31", command, read, out.parent / "log.txt")


def throughput(tool: Tool, server: EngineServer, items: int) -> dict[str, float]:
    start = time.perf_counter()
    tool.finish(tool.start())
    wall = time.perf_counter() - start
    kept = tool.read()
    assert sorted(set(kept)) == sorted(kept) and len(kept) == items, (tool.name, len(kept))
    first = min(min(times) for times in server.times.values())
    last = max(max(times) for times in server.times.values())
    return {"wall_s": wall, "req_per_s_wall": items / wall,
            "req_per_s_serving": items / max(1e-9, last - first),
            "max_in_flight": server.max_in_flight}


def kill_and_rerun(tool: Tool, server: EngineServer, items: int, rng: random.Random) -> dict:
    """SIGKILL once a random 30-70 % of the answers are in, then the same command again."""
    target = int(items * rng.uniform(0.3, 0.7))
    process = tool.start()
    deadline = time.monotonic() + 600
    while sum(server.answered.values()) < target and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    answered_before = sum(server.answered.values())
    tool.finish(tool.start())
    kept = tool.read()
    asked = sum(len(actions) for actions in server.actions.values())
    return {"killed": int(killed), "answered_before_kill": answered_before,
            "lost": items - len(set(kept)), "duplicated": len(kept) - len(set(kept)),
            "re_asked": asked - items}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05,
                        help="the server's think time per request (s)")
    args = parser.parse_args()
    if not CURATOR_PYTHON.exists():
        print(f"no Curator environment at {CURATOR_PYTHON}; build it (see this file's "
              "docstring) or set CURATOR_PYTHON")
        return 2
    items = 120 if args.quick else 400
    seeds = [1] if args.quick else [1, 2, 3]
    root = Path(tempfile.mkdtemp(prefix="vs-curator-"))
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    try:
        samples_dir = make_ingest(root / "ingest", {"val": items}, shard_size=100)

        def fresh_server() -> EngineServer:
            return EngineServer(reader, latency_s=args.latency, max_lifetime_s=1800)

        with fresh_server() as server:
            teachers = teachers_file(root / "t.yaml", server.base_url, args.concurrency)
            requests = root / "requests.jsonl"
            assert write_requests(samples_dir, teachers, requests) == items
        results: dict[str, dict] = {}
        for make in ("ours-default", "ours-flush1", "curator"):
            kills = []
            for seed in [None, *seeds]:
                work = root / f"{make}-{seed}"
                work.mkdir(parents=True)
                with fresh_server() as server:
                    t = teachers_file(work / "t.yaml", server.base_url, args.concurrency)
                    if make == "curator":
                        tool = curator(requests, work / "out.jsonl", work / "cache",
                                       server.base_url, args.concurrency)
                    else:
                        tool = ours(samples_dir, t, work / "gen",
                                    1 if make == "ours-flush1" else None)
                    if seed is None:
                        results[tool.name] = {"throughput": throughput(tool, server, items)}
                    else:
                        kills.append(kill_and_rerun(tool, server, items, random.Random(seed)))
            results[tool.name]["kills"] = kills
        print(f"\n{items} items, concurrency {args.concurrency}, server think time "
              f"{args.latency * 1000:.0f} ms, {len(seeds)} SIGKILL + rerun each")
        print(f"{'tool':36} {'req/s wall':>10} {'req/s serving':>13} {'in flight':>9} "
              f"{'killed':>6} {'lost':>5} {'dup':>5} {'re-asked':>9}")
        for name, result in results.items():
            t, k = result["throughput"], result["kills"]
            print(f"{name:36} {t['req_per_s_wall']:10.1f} {t['req_per_s_serving']:13.1f} "
                  f"{t['max_in_flight']:9d} "
                  f"{sum(x['killed'] for x in k):6d} {sum(x['lost'] for x in k):5d} "
                  f"{sum(x['duplicated'] for x in k):5d} "
                  f"{'/'.join(str(x['re_asked']) for x in k):>9}")
        lost = sum(x["lost"] for r in results.values() for x in r["kills"])
        print(f"records lost (all tools, all kills): {lost}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
