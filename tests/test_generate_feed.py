"""The streaming feed (distill/generate/feed.py): each engine's window kept full across
shard boundaries, results settled out of order across several open shards, every shard
committed when all its keys are settled, exactly once; and a SIGKILL of a streaming run
against a server, then the same command again, writes what an uninterrupted run writes."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from distill.generate import feed as feed_module
from distill.generate.runner import GenerateOptions, run_generate
from distill.generate.stage import EngineCache
from distill.generate.teachers import load_teacher_set
from testing.generate import (
    builtin_teacher,
    content_set,
    generate_command,
    kill_after,
    leftovers,
    lines_written,
    make_ingest,
    read_outputs,
    write_teachers,
)

REPO = Path(__file__).resolve().parents[1]


def _shuffled(path: Path, window: int) -> Path:
    return write_teachers(path, {
        "knn": {**builtin_teacher("knn", k=2), "engine": "testing.generate:ShuffledEngine",
                "batch_size": window},
        "logreg": {**builtin_teacher("logreg", k=1), "engine":
                   "testing.generate:ShuffledEngine", "batch_size": window}},
        routing={"default": ["knn", "logreg"], "max_minus_min": ["logreg"]})


def test_out_of_order_results_across_open_shards_write_what_the_shard_feed_writes(
        tmp_path, monkeypatch):
    samples = make_ingest(tmp_path / "in", {"val": 23, "test": 7}, shard_size=5)  # 7 shards
    teachers = _shuffled(tmp_path / "t.yaml", window=7)
    opened: list[int] = []
    open_next = feed_module.ShardFeed._open_next

    def counting(feed: feed_module.ShardFeed) -> None:
        open_next(feed)
        opened.append(len(feed.open))

    monkeypatch.setattr(feed_module.ShardFeed, "_open_next", counting)
    engines = EngineCache()
    try:
        reference = run_generate(GenerateOptions(samples, str(teachers), tmp_path / "shard",
                                                 feed="shard"), engines=engines)
        lines: list[str] = []
        streamed = run_generate(GenerateOptions(samples, str(teachers), tmp_path / "stream"),
                                engines=engines, status=lines.append)
        streams = [engine.last_stream for engine in engines.engines.values()]
    finally:
        engines.close()
    assert streamed.shards_done == reference.shards_done == 7
    traces, rejects = read_outputs(tmp_path / "stream")
    expected, expected_rejects = read_outputs(tmp_path / "shard")
    assert content_set(traces) == content_set(expected)
    assert sorted(r.key for r in rejects) == sorted(r.key for r in expected_rejects)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == streamed.settled
    # A window of 7 is wider than a shard's 5 asks a teacher: it was filled across shards,
    # never overfilled (ShuffledStream asserts that), and only as many shards as the
    # windows need were open at once.
    assert [s.max_held for s in streams] == [7, 7]
    assert 1 < max(opened) <= 4
    assert not leftovers(tmp_path / "stream")
    # The progress bar's note: in flight, done, tokens/s; the last one says all is back.
    assert lines and lines[-1].startswith("0 in flight, ") and "requests done" in lines[-1]
    manifest = (tmp_path / "stream" / "manifest.json").read_text()
    assert manifest.count("part-") == (tmp_path / "shard" / "manifest.json").read_text() \
        .count("part-")


def test_a_failing_engine_leaves_open_shards_partial_and_the_rerun_completes_them(
        tmp_path, monkeypatch):
    """An exception mid-stream (an engine that dies) commits nothing unsettled: the open
    shards stay partial, and the same command again settles exactly what is missing."""
    samples = make_ingest(tmp_path / "in", {"val": 20}, shard_size=4)
    teachers = _shuffled(tmp_path / "t.yaml", window=6)
    out = tmp_path / "out"
    from testing.generate import ShuffledStream

    calls = []
    collect = ShuffledStream.collect

    def dying(stream: ShuffledStream, wait_s: float):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("the engine died")
        return collect(stream, wait_s)

    monkeypatch.setattr(ShuffledStream, "collect", dying)
    with pytest.raises(RuntimeError, match="the engine died"):
        run_generate(GenerateOptions(samples, str(teachers), out, flush_every=1))
    assert list(out.glob("traces/val/*.partial")), "no shard was left open"
    monkeypatch.setattr(ShuffledStream, "collect", collect)
    summary = run_generate(GenerateOptions(samples, str(teachers), out))
    assert summary.already_done > 0
    reference = tmp_path / "reference"
    run_generate(GenerateOptions(samples, str(teachers), reference))
    traces, rejects = read_outputs(out)
    expected, expected_rejects = read_outputs(reference)
    assert content_set(traces) == content_set(expected)
    assert sorted(r.key for r in rejects) == sorted(r.key for r in expected_rejects)
    assert not leftovers(out)


def test_engine_windows_come_from_the_engines():
    """The vllm window is twice the scheduler's batch; openai's twice its concurrency; a
    batch engine's window is its batch."""
    from distill.generate.engines.openai import OpenAIEngine, OpenAIOptions

    engine = OpenAIEngine("m", OpenAIOptions(max_concurrency=5))
    stream = engine.stream()
    try:
        assert stream.window == 10
    finally:
        stream.close()
    teachers = load_teacher_set("digits")
    knn = teachers.teachers["knn"]
    assert knn.make_engine().stream(knn.batch_size).window == knn.batch_size


# --- SIGKILL of a streaming run against a server ----------------------------------------


def _kill_and_rerun(tmp_path: Path, seed: int, kills: int, items: int) -> tuple[int, int]:
    from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
    from testing.openai_server import EngineServer

    samples = make_ingest(tmp_path / "in", {"val": items}, shard_size=6)
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    rng = random.Random(seed)
    with EngineServer(reader, latency_s=0.01, max_lifetime_s=600) as server:
        teachers = write_teachers(tmp_path / "t.yaml", {"api": {
            "engine": "openai", "model": "knn", "prompt": "cot", "k": 2,
            "sampling": {"temperature": 0.7, "max_tokens": 64, "seed": 0},
            "options": {"base_url": server.base_url, "api_key_env": None,
                        "max_concurrency": 4, "timeout_s": 10}}})
        reference = tmp_path / "reference"
        run_generate(GenerateOptions(samples, str(teachers), reference))
        expected, expected_rejects = read_outputs(reference)
        total = len(expected) + len(expected_rejects)
        out = tmp_path / "gen"
        env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO)}
        landed = 0
        for _ in range(kills):
            process = subprocess.Popen(generate_command(samples, teachers, out), cwd=REPO,
                                       env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            done = lines_written(out)
            target = done + rng.randint(1, max(1, (total - done) // 2))
            landed += kill_after(process, out, target, rng.uniform(0, 0.05))
            process.wait(timeout=60)
        final = subprocess.run(generate_command(samples, teachers, out), cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == total  # 0 lost, 0 duplicated
    assert content_set(traces) == content_set(expected)  # as an uninterrupted run
    assert not leftovers(out)
    return landed, total


def test_sigkill_of_a_streaming_openai_run_then_rerun(tmp_path):
    landed, total = _kill_and_rerun(tmp_path, seed=5, kills=2, items=24)
    assert landed >= 1, "no kill landed while the run was working"
    print(f"\nopenai stream kills: {landed} landed, {total} outputs, 0 lost, 0 duplicated")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_of_a_streaming_openai_run_many_times(tmp_path, seed):
    landed, total = _kill_and_rerun(tmp_path, seed=seed, kills=4, items=60)
    assert landed >= 2


def test_images_scaled_to_a_teachers_pixel_budget(tmp_path):
    """max_image_pixels: the image a teacher is sent fits its budget (aspect kept); one
    that fits goes as it is; the budget is part of what defines the teacher's outputs."""
    import io

    from PIL import Image

    from distill.core.images import fit_pixels

    buffer = io.BytesIO()
    Image.new("RGB", (400, 100), (200, 10, 10)).save(buffer, format="JPEG")
    big = buffer.getvalue()
    scaled = Image.open(io.BytesIO(fit_pixels(big, 10_000)))
    assert scaled.size == (200, 50) and scaled.format == "PNG"
    assert fit_pixels(big, 40_000) is big
    plain = write_teachers(tmp_path / "a.yaml", {"knn": builtin_teacher("knn")})
    budget = write_teachers(tmp_path / "b.yaml", {"knn": {**builtin_teacher("knn"),
                                                          "max_image_pixels": 10_000}})
    first, second = load_teacher_set(plain), load_teacher_set(budget)
    assert "max_image_pixels" not in first.teachers["knn"].identity()
    assert first.hash != second.hash


def test_the_stage_sends_images_within_the_budget(tmp_path, monkeypatch):
    import io

    from PIL import Image

    from distill.generate.engines.builtin import BuiltinDigitsEngine

    seen: list[tuple[int, int]] = []
    generate = BuiltinDigitsEngine.generate

    def spying(engine, requests):
        seen.extend(Image.open(io.BytesIO(r.images[0])).size for r in requests)
        return generate(engine, requests)

    monkeypatch.setattr(BuiltinDigitsEngine, "generate", spying)
    samples = make_ingest(tmp_path / "in", {"val": 6}, shard_size=3)
    teachers = write_teachers(tmp_path / "t.yaml", {"knn": {
        **builtin_teacher("knn", k=1), "engine": "testing.generate:ShuffledEngine",
        "max_image_pixels": 1000}})
    summary = run_generate(GenerateOptions(samples, str(teachers), tmp_path / "out"))
    assert summary.settled == 6 and len(seen) == 6
    assert all(width * height <= 1000 for width, height in seen)


def test_vllm_stream_over_a_simulated_llm():
    """The vllm engine's stream (enqueue_chat, llm_engine.step, vLLM's internal request
    ids) over testing/sim_vllm.py's LLM: every request back once with its own output, the
    window twice max_num_seqs, and a request vLLM drops without an output becomes a
    transient failure instead of a feed that waits forever."""
    import io

    from PIL import Image

    from distill.generate.engines.base import ChatRequest, Completion, EngineFailure
    from distill.generate.engines.vllm import VLLMOptions
    from distill.schemas import SamplingParams
    from testing.sim_vllm import SimVLLMEngine

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    engine = SimVLLMEngine("sim", VLLMOptions(engine_args={
        "time_scale": 0.001, "max_num_seqs": 4, "median_tokens": 6}))
    try:
        stream = engine.stream()
        assert stream.window == 8
        requests = [ChatRequest(id=f"r{i}", system="", user=f"What is the sum? {i}",
                                images=(buffer.getvalue(),),
                                sampling=SamplingParams(max_tokens=32, seed=0), ks=(0, 1))
                    for i in range(6)]
        for request in requests:
            stream.submit(request)
        back = []
        while len(back) < len(requests):
            back.extend(stream.collect(0.1))
        assert sorted(o.request.id for o in back) == sorted(r.id for r in requests)
        assert all(o.request is next(r for r in requests if r.id == o.request.id)
                   for o in back)
        for outcome in back:
            assert len(outcome.results) == 2
            assert all(isinstance(c, Completion) and 1 <= c.completion_tokens <= 32
                       for c in outcome.results)
        dropped = requests[0]
        stream.submit(dropped)
        engine.llm.abort_request(list(stream.in_engine))  # vLLM drops it, says nothing
        [lost] = stream.collect(0.1)
        assert lost.request is dropped
        assert all(isinstance(r, EngineFailure) and r.reason == "engine_error:lost"
                   and not r.permanent for r in lost.results)
    finally:
        engine.close()
