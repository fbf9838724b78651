"""The hf engine on a tiny VLM built from a config (real processor, real generate)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.core.images import read_image_bytes
from distill.core.prompts import load_prompt
from distill.core.shards import iter_records
from distill.generate.engines.base import ChatRequest, Completion
from distill.generate.engines.hf import HFEngine, HFOptions
from distill.generate.engines.openai import OpenAIEngine, OpenAIOptions
from distill.generate.runner import GenerateOptions, run_generate
from distill.schemas import Sample, SamplingParams
from testing.generate import make_ingest, read_outputs, write_teachers
from testing.openai_server import EngineServer
from tests.helpers.tiny_vlm import build_tiny_vlm

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm")


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("ingest") / "d", {"val": 6})


@pytest.fixture(scope="module")
def engine(tiny_model) -> HFEngine:
    return HFEngine(str(tiny_model), HFOptions(micro_batch_size=4))


def _requests(samples_dir: Path, temperature: float = 0.0, ks=(0,)) -> list[ChatRequest]:
    prompt = load_prompt("cot")
    requests = []
    for sample in iter_records(samples_dir / "samples/val/part-00000.jsonl", Sample):
        system, user = prompt.render(sample)
        requests.append(ChatRequest(
            id=sample.id, system=system, user=user,
            images=(read_image_bytes(sample.image, samples_dir),),
            sampling=SamplingParams(temperature=temperature, max_tokens=6, seed=0), ks=ks))
    return requests


def test_batched_generation_matches_one_at_a_time(engine, tiny_model, samples_dir):
    requests = _requests(samples_dir)
    batched = {o.request.id: o.results[0] for o in engine.generate(requests)}
    single = HFEngine(str(tiny_model), HFOptions(micro_batch_size=1))
    alone = {o.request.id: o.results[0] for o in single.generate(requests)}
    assert set(batched) == {r.id for r in requests}
    for request_id, result in batched.items():
        assert isinstance(result, Completion)
        # Left padding and the attention mask keep batching invisible to greedy decoding.
        assert result.text == alone[request_id].text
        assert result.prompt_tokens == alone[request_id].prompt_tokens > 10
        assert 1 <= result.completion_tokens <= 6
        assert result.finish_reason in ("stop", "length")
    assert all(r.text for r in batched.values())  # decoded tokens (gibberish, not empty)


def test_k_samples_are_rows_and_sampling_is_seeded(engine, samples_dir):
    requests = _requests(samples_dir, temperature=1.0, ks=(0, 1, 2))[:2]
    first = [[c.text for c in o.results] for o in engine.generate(requests)]
    second = [[c.text for c in o.results] for o in engine.generate(requests)]
    assert first == second
    assert all(len(texts) == 3 for texts in first)
    assert any(len(set(texts)) > 1 for texts in first)


def test_generate_with_the_hf_engine_accounts_for_every_key(tiny_model, samples_dir,
                                                             tmp_path):
    teachers = write_teachers(tmp_path / "t.yaml", {"tiny": {
        "engine": "hf", "model": str(tiny_model), "prompt": "think", "k": 2,
        "sampling": {"temperature": 0.0, "max_tokens": 6, "seed": 0},
        "options": {"micro_batch_size": 6}}})
    out = tmp_path / "gen"
    run_generate(GenerateOptions(samples_dir, str(teachers), out))
    traces, rejects = read_outputs(out)
    # A random tiny model writes no "Answer:" line: every output is kept as a rejection
    # with its raw text, none lost.
    assert len(traces) + len(rejects) == 12
    assert {r.reason for r in rejects} <= {"unparseable"}
    assert all(r.raw is not None for r in rejects)


def test_openai_engine_against_an_hf_backed_server(engine, samples_dir):
    """The fallback OpenAI-protocol server: real HTTP, answers from the tiny model."""
    requests = _requests(samples_dir)[:3]
    direct = {o.request.id: o.results[0].text for o in engine.generate(requests)}
    with EngineServer(engine) as server:
        client = OpenAIEngine("tiny", OpenAIOptions(base_url=server.base_url,
                                                    api_key_env=None, max_concurrency=2))
        remote = {o.request.id: o.results[0] for o in client.generate(requests)}
    for request_id, result in remote.items():
        assert isinstance(result, Completion)
        assert result.text == direct[request_id]
        assert result.prompt_tokens and result.completion_tokens
