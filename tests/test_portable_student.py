"""A saved student outside the toolkit: its folder carries its own code (``auto_map``), so
transformers' Auto classes load it with ``trust_remote_code=True`` and greedy decoding
gives the toolkit's own output.

The last test runs the README's code in a venv that holds only torch, transformers and
pillow (``.ci/setup_clean_env.sh``; CI passes its python in ``DISTILL_CLEAN_PYTHON``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.train.inference import generate_answers
from distill.train.siqvl import PORTABLE_MODULES
from distill.train.siqvl.build import load_student
from distill.train.siqvl.processing import TEMPLATE_MARK, multimodal_chat_template
from testing.generate import make_ingest
from testing.students import split_samples, train_student

torch.set_num_threads(1)
SIQVL_DIR = Path(__file__).resolve().parents[1] / "train" / "siqvl"
AUTO_CLASSES_SCRIPT = Path(__file__).parent / "helpers" / "auto_classes_generate.py"
MAX_NEW_TOKENS = 24
N_ITEMS = 8


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("portable") / "ingest",
                       {"train": 48, "test": N_ITEMS})


@pytest.fixture(scope="module")
def world(samples, tmp_path_factory) -> tuple[Path, Path]:
    """(ingest folder, a student saved by save_student: seconds, for the default run)."""
    from distill.train.siqvl.build import build_student, load_model_spec, save_student

    folder = tmp_path_factory.mktemp("saved") / "student"
    save_student(*build_student(load_model_spec("test-micro"), seed=3), folder)
    return samples, folder


@pytest.fixture(scope="module")
def trained(samples, tmp_path_factory) -> tuple[Path, Path]:
    """(ingest folder, RUN/final of a short LoRA run: the folder distill train writes)."""
    return samples, train_student(tmp_path_factory.mktemp("trained"), samples)


def _requests(samples: Path, processor, mode: str = "cot") -> list[dict]:
    """Each test item as a user outside the toolkit asks it: the trained prompt's text."""
    out = []
    for sample in split_samples(samples, "test"):
        system, user = processor.prompt_template(mode).render(sample)
        out.append({"system": system if processor.settings.include_system else "",
                    "user": user, "image": str(samples / sample.image.path)})
    return out


def test_the_portable_model_type_is_the_one_the_toolkit_recognises():
    from distill.core.model_folders import SIQVL_MODEL_TYPE
    from distill.train.siqvl.configuration import MODEL_TYPE

    assert MODEL_TYPE == SIQVL_MODEL_TYPE  # two layers that cannot import each other


def test_portable_modules_import_only_torch_transformers_numpy_and_pillow():
    allowed = {"torch", "transformers", "numpy", "PIL", *sys.stdlib_module_names}
    for name in PORTABLE_MODULES:
        tree = ast.parse((SIQVL_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            else:
                continue
            outside = [root for root in roots if root not in allowed]
            # an optional kernel inside try/except is allowed (transformers skips it too)
            assert not outside or _inside_try(tree, node), f"{name}.py imports {outside}"


def _inside_try(tree: ast.AST, target: ast.AST) -> bool:
    return any(target in ast.walk(node) for node in ast.walk(tree) if isinstance(node, ast.Try))


def test_the_chat_template_renders_plain_messages_as_the_tokenizers_own():
    """Wrapping the tokenizer's template changes nothing the toolkit ever rendered."""
    from transformers import AutoTokenizer

    from distill.train.tokenizer import TINY_TOKENIZER_DIR
    from tests.test_train_processor import _qwen_tokenizer_dir

    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    for folder in (TINY_TOKENIZER_DIR, _qwen_tokenizer_dir()):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        own = tokenizer.chat_template
        wrapped = multimodal_chat_template(own, placeholder)
        assert multimodal_chat_template(wrapped, placeholder) == wrapped  # never twice
        for messages in ([{"role": "user", "content": f"{placeholder}\nHow many?"}],
                         [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"{placeholder}\nHow many?"}]):
            plain = tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
            tokenizer.chat_template = wrapped
            assert tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True) == plain
            # the same turn as content parts: what processors and OpenAI servers send
            parts = [dict(m, content=[{"type": "image"}, {"type": "text", "text": "How many?"}])
                     if m["role"] == "user" else m for m in messages]
            assert tokenizer.apply_chat_template(parts, tokenize=False,
                                                 add_generation_prompt=True) == plain
            tokenizer.chat_template = own


def test_the_saved_folder_carries_its_code_auto_map_and_processor(world):
    _, student = world
    _assert_carries_its_code(student)


def _assert_carries_its_code(student: Path) -> None:
    for name in PORTABLE_MODULES:  # the very files of the package, not another copy
        assert (student / f"{name}.py").read_bytes() == (SIQVL_DIR / f"{name}.py").read_bytes()
    config = json.loads((student / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration.SiQVLConfig",
        "AutoModelForImageTextToText": "modeling.SiQVLForConditionalGeneration"}
    processor = json.loads((student / "processor_config.json").read_text())
    assert processor["processor_class"] == "SiQVLProcessor"
    assert processor["auto_map"] == {"AutoProcessor": "processing.SiQVLProcessor"}
    assert (student / "chat_template.jinja").read_text().startswith(TEMPLATE_MARK)


def test_the_folders_own_code_loads_and_computes_what_the_toolkits_does(world):
    """The copies in the folder import (relatively, among themselves) and give the same
    logits as the package's classes. (In this process the Auto classes prefer the classes
    the package registered; the clean-venv test below runs the copies end to end.)"""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    samples, student = world
    classes = {name: get_class_from_dynamic_module(ref, str(student)) for name, ref in (
        ("model", "modeling.SiQVLForConditionalGeneration"),
        ("processor", "processing.SiQVLProcessor"))}
    assert all(c.__module__.startswith("transformers_modules.") for c in classes.values())
    copy = classes["model"].from_pretrained(student).eval()
    portable = classes["processor"].from_pretrained(student)
    model, processor = load_student(student)
    sample = split_samples(samples, "test")[0]
    batch = processor.generation_batch([sample], [_image(samples, sample)], "cot")
    request = _requests(samples, processor)[0]
    user = [{"type": "image", "image": _image(samples, sample)},
            {"type": "text", "text": request["user"]}]
    messages = ([{"role": "system", "content": request["system"]}] if request["system"]
                else []) + [{"role": "user", "content": user}]
    inputs = portable.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                          return_dict=True, return_tensors="pt")
    assert inputs["input_ids"].tolist() == batch["input_ids"].tolist()
    assert torch.equal(inputs["pixel_values"], batch["pixel_values"])
    with torch.no_grad():
        assert torch.equal(copy(**inputs).logits, model(**batch).logits)


def _image(samples: Path, sample):
    from distill.core.images import load_image

    return load_image(sample.image, samples)


def test_the_readme_code_gives_the_toolkits_greedy_output(world, tmp_path):
    """The README's loading code (tests/helpers/auto_classes_generate.py), item by item."""
    samples, student = world
    sys.path.insert(0, str(AUTO_CLASSES_SCRIPT.parent))
    try:
        import auto_classes_generate
    finally:
        sys.path.pop(0)
    _, toolkit_processor = load_student(student)
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(_requests(samples, toolkit_processor)))
    auto_classes_generate.main(str(student), str(requests), str(tmp_path / "out.json"),
                               MAX_NEW_TOKENS)
    _assert_same_as_toolkit(json.loads((tmp_path / "out.json").read_text()), student, samples)


def _assert_same_as_toolkit(outputs: list[dict], student: Path, samples: Path) -> None:
    model, processor = load_student(student)
    expected = generate_answers(model, processor, split_samples(samples, "test"), samples,
                                max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    assert len(outputs) == len(expected) == N_ITEMS
    for got, (text, n_tokens) in zip(outputs, expected, strict=True):
        assert len(got["tokens"]) == n_tokens  # stopped at the same EOS (or the limit)
        assert got["text"].strip() == text


@pytest.mark.portable
@pytest.mark.skipif(not os.environ.get("DISTILL_CLEAN_PYTHON"),
                    reason="DISTILL_CLEAN_PYTHON names no clean venv (.ci/setup_clean_env.sh)")
def test_a_venv_with_only_torch_and_transformers_loads_and_runs_the_folder(trained, tmp_path):
    """The README's code, in a venv without this toolkit, on a folder of distill train."""
    python = str(Path(os.environ["DISTILL_CLEAN_PYTHON"]).absolute())  # not resolve(): the venv
    samples, student = trained
    _assert_carries_its_code(student)
    assert (student / "adapter").is_dir()  # a LoRA run: merged here, the adapter beside
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    probe = subprocess.run([python, "-I", "-c", "import distill"], capture_output=True,
                           cwd=tmp_path, env=env)
    assert probe.returncode != 0, "the clean venv can import distill"
    _, toolkit_processor = load_student(student)
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps(_requests(samples, toolkit_processor)))
    out = tmp_path / "out.json"
    subprocess.run([python, "-I", str(AUTO_CLASSES_SCRIPT), str(student), str(requests),
                    str(out), str(MAX_NEW_TOKENS)], check=True, cwd=tmp_path, env=env,
                   timeout=600)
    _assert_same_as_toolkit(json.loads(out.read_text()), student, samples)


def test_the_generic_hf_engine_runs_a_student_as_any_transformers_vlm(world):
    """``engine: hf`` (AutoProcessor, AutoModelForImageTextToText, the prompt sliced off
    generate's output, EOS from the generation config) gives the toolkit's answers."""
    from distill.core.images import read_image_bytes
    from distill.core.predictors import student_prompt
    from distill.generate.engines.base import ChatRequest, Completion
    from distill.generate.engines.hf import HFEngine, HFOptions
    from distill.schemas import SamplingParams

    samples, student = world
    items = split_samples(samples, "test")
    prompt = student_prompt(student, "cot")
    sampling = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS)
    requests = [ChatRequest(id=s.id, system=prompt.render(s)[0], user=prompt.render(s)[1],
                            images=(read_image_bytes(s.image, samples),), sampling=sampling)
                for s in items]
    engine = HFEngine(str(student), HFOptions(dtype="float32", device="cpu",
                                              micro_batch_size=1))
    got = {done.request.id: done.results[0] for done in engine.generate(requests)}
    model, processor = load_student(student)
    expected = generate_answers(model, processor, items, samples,
                                max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    for sample, (text, n_tokens) in zip(items, expected, strict=True):
        result = got[sample.id]
        assert isinstance(result, Completion)
        assert (result.text.strip(), result.completion_tokens) == (text, n_tokens)
