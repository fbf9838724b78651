"""`distill eval` end to end with a real tiny image-text-to-text model (built from configs,
tokenizer trained here) on the digits test split: batched left-padded generation, the
generation cache (only new or changed items are generated, an interrupted run resumes),
and clear errors for a checkpoint of the wrong kind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.core.errors import DistillError, InputError
from distill.core.evalsets import load_eval_set
from distill.core.predictors import Predictor, PredictorOptions, load_predictor
from distill.core.shards import read_json_model
from distill.evaluate.cache import GenerationCache
from distill.evaluate.runner import evaluate
from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import EvalResult
from tests.conftest import write_jsonl
from tests.helpers.tiny_llava import build_tiny_llava

MAX_NEW = 12


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "digits"
    ingest(iter_digits(DigitsConfig(seed=2, counts={"test": 12})), IngestOptions(out=out))
    return out


def hf_predictor(model: Path, batch_size: int = 4, max_new_tokens: int = MAX_NEW) -> Predictor:
    return load_predictor(f"hf:{model}", PredictorOptions(batch_size=batch_size,
                                                          max_new_tokens=max_new_tokens))


@pytest.fixture(scope="module")
def predictor(tiny_model: Path) -> Predictor:
    return hf_predictor(tiny_model)


def test_cli_eval_end_to_end_in_both_modes(tiny_model: Path, digits: Path, tmp_path: Path,
                                           capsys) -> None:
    out, cache = tmp_path / "results", tmp_path / "cache"
    args = ["eval", "--model", f"hf:{tiny_model}", "--data", str(digits), "--mode", "cot",
            "--mode", "direct", "--out", str(out), "--cache-dir", str(cache),
            "--max-new-tokens", str(MAX_NEW), "--batch-size", "5"]
    assert main(args) == 0
    files = sorted(out.glob("*.json"))
    assert ["-cot-" in files[0].name, "-direct-" in files[1].name] == [True, True]
    results = [read_json_model(f, EvalResult) for f in files]
    for result in results:
        assert result.model.kind == "hf" and result.model.fingerprint
        # Relative to the result's folder: a moved project keeps finding its eval set.
        assert result.eval_set == f"{os.path.relpath(digits.resolve(), out.resolve())}:test"
        assert len(result.items) == 12 and result.metrics["n"] == 12
        assert result.generation["max_new_tokens"] == MAX_NEW
        assert set(result.per_category) == {item.category for item in result.items}
        for item in result.items:
            assert 0 < item.output_tokens <= MAX_NEW and item.latency_s > 0
            assert item.correctness in ("correct", "wrong", "unparseable")
        assert result.metrics["tokens_per_s"] > 0
    cot, direct = results
    assert cot.generation["prompt_id"] == "cot" and direct.generation["prompt_id"] == "direct"
    assert cot.result_id != direct.result_id
    assert "eval results" in capsys.readouterr().out
    # A second run reuses every output: same ids, same raw outputs, nothing generated.
    assert main(args) == 0
    again = [read_json_model(f, EvalResult) for f in sorted(out.glob("*.json"))]
    assert [r.result_id for r in again] == [r.result_id for r in results]
    assert [i.raw_output for i in again[0].items] == [i.raw_output for i in cot.items]
    shards = sorted(cache.glob("*/part-*.jsonl"))
    assert len(shards) == 2 and all(len(s.read_text().splitlines()) == 12 for s in shards)


def test_batched_left_padded_generation_equals_one_by_one(tiny_model: Path,
                                                          digits: Path) -> None:
    eval_set = load_eval_set(digits)
    samples = eval_set.samples[:8]
    one = hf_predictor(tiny_model, batch_size=1)
    many = hf_predictor(tiny_model, batch_size=8)
    single = one.predict(samples, eval_set.image_root, "cot")
    batched = many.predict(samples, eval_set.image_root, "cot")
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.output_tokens for g in batched] == [g.output_tokens for g in single]
    assert len({g.text for g in single}) > 2  # the outputs do depend on the input
    for generation in single:
        assert generation.finish_reason == ("length" if generation.output_tokens == MAX_NEW
                                            else "stop")


def _subset(eval_dir: Path, folder: Path, samples, **changes) -> Path:
    """A JSONL eval set of these samples (images still under the ingest folder)."""
    rows = [sample.model_copy(update=changes.get(sample.id, {})).model_dump_json()
            for sample in samples]
    path = write_jsonl(folder / f"subset-{len(rows)}-{len(changes)}.jsonl", rows)
    return path


def test_cache_generates_only_new_or_changed_items(predictor: Predictor, tiny_model: Path,
                                                   digits: Path, tmp_path: Path) -> None:
    full = load_eval_set(digits)
    cache = tmp_path / "cache"
    root = full.image_root

    first = evaluate(predictor, load_eval_set(_subset(digits, tmp_path, full.samples[:8]),
                                              image_root=root), "cot", cache_dir=cache)
    assert (first.generated, first.reused) == (8, 0)
    grown = evaluate(predictor, full, "cot", cache_dir=cache)
    assert (grown.generated, grown.reused) == (4, 8)
    assert grown.result.result_id != first.result.result_id  # another eval set
    by_id = {item.sample_id: item for item in grown.result.items}
    assert all(by_id[i.sample_id].raw_output == i.raw_output for i in first.result.items)

    # A corrected gold answer is re-judged without generating.
    target = next(s for s in full.samples if s.answer_type == "number")
    new_gold = str(int(target.answer) + 1)
    relabeled = load_eval_set(_subset(digits, tmp_path, full.samples,
                                      **{target.id: {"answer": new_gold}}), image_root=root)
    rerun = evaluate(predictor, relabeled, "cot", cache_dir=cache)
    assert rerun.generated == 0
    assert next(i for i in rerun.result.items if i.sample_id == target.id).gold == new_gold
    # A changed question is generated again, only that one.
    reworded = load_eval_set(_subset(digits, tmp_path, full.samples,
                                     **{target.id: {"question": target.question + " Think."}}),
                             image_root=root)
    assert evaluate(predictor, reworded, "cot", cache_dir=cache).generated == 1
    # Another generation config is another cache key.
    longer = hf_predictor(tiny_model, max_new_tokens=MAX_NEW + 1)
    assert evaluate(longer, full, "cot", cache_dir=cache).generated == 12


def test_items_that_show_the_same_input_are_generated_and_cached_once(
        predictor: Predictor, digits: Path, tmp_path: Path) -> None:
    """A training pool can hold two draws of the same scans in the same cells: one input,
    one generation, one cache line, and both items scored."""
    full = load_eval_set(digits)
    twin = full.samples[0].model_copy(update={"id": "twin-of-first"})
    twice = load_eval_set(_subset(digits, tmp_path, [*full.samples[:4], twin]),
                          image_root=full.image_root)
    cache = tmp_path / "cache"
    first = evaluate(predictor, twice, "cot", cache_dir=cache)
    assert (first.generated, first.reused, len(first.result.items)) == (4, 1, 5)
    assert first.result.items[0].raw_output == first.result.items[4].raw_output
    again = evaluate(predictor, twice, "cot", cache_dir=cache)  # the cache reads back whole
    assert (again.generated, again.reused) == (0, 5)


class _Interrupted:
    """The real model, stopped by Ctrl-C after ``chunks`` chunks."""

    def __init__(self, inner: Predictor, chunks: int) -> None:
        self.inner, self.chunks = inner, chunks

    @property
    def model_ref(self):
        return self.inner.model_ref

    def generation_config(self, mode):
        return self.inner.generation_config(mode)

    def predict(self, samples, image_root, mode):
        if self.chunks == 0:
            raise KeyboardInterrupt
        self.chunks -= 1
        return self.inner.predict(samples, image_root, mode)

    def close(self) -> None:
        self.inner.close()


def test_interrupted_eval_keeps_finished_chunks(tiny_model: Path, digits: Path,
                                                tmp_path: Path) -> None:
    eval_set, cache = load_eval_set(digits), tmp_path / "cache"
    interrupted = _Interrupted(hf_predictor(tiny_model), chunks=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate(interrupted, eval_set, "direct", cache_dir=cache, chunk_size=4)
    resumed = evaluate(hf_predictor(tiny_model), eval_set, "direct", cache_dir=cache,
                       chunk_size=4)
    assert (resumed.generated, resumed.reused) == (4, 8)

    # A hard kill leaves a partial shard, possibly with a torn last line: it is repaired
    # and its complete lines are reused.
    (key_dir,) = [p for p in cache.iterdir() if p.is_dir()]
    shards = sorted(key_dir.glob("part-*.jsonl"))
    last = shards[-1]
    partial = last.with_name(last.name + ".partial")
    lines = last.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    last.unlink()
    after_crash = evaluate(hf_predictor(tiny_model), eval_set, "direct", cache_dir=cache,
                           chunk_size=4)
    assert (after_crash.generated, after_crash.reused) == (1, 11)
    assert not list(key_dir.glob("*.partial"))
    assert after_crash.result.result_id == resumed.result.result_id


def test_one_eval_per_cache_key_at_a_time(tmp_path: Path) -> None:
    with GenerationCache(tmp_path, "k" * 64, {"model": "x"}), \
            pytest.raises(DistillError, match=r"another run is writing to eval cache .*: pid "
                                              rf"{os.getpid()} on host"):
        GenerationCache(tmp_path, "k" * 64, {"model": "x"}).__enter__()
    with GenerationCache(tmp_path, "k" * 64, {"model": "x"}):
        pass  # released


def test_checkpoints_of_the_wrong_kind_get_clear_errors(tiny_model: Path, digits: Path,
                                                        tmp_path: Path, capsys) -> None:
    options = PredictorOptions()
    with pytest.raises(InputError, match=r"'llava' checkpoint, not a SiQ-VL checkpoint.*"
                                         r"--model hf:"):
        load_predictor(f"siqvl:{tiny_model}", options)
    # A text-only model is not an image-text-to-text model.
    from transformers import Qwen2Config, Qwen2ForCausalLM

    text_only = tmp_path / "qwen2-text"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(text_only)
    shutil.copy(tiny_model / "tokenizer.json", text_only / "tokenizer.json")
    eval_set = load_eval_set(digits)
    with pytest.raises(InputError, match="'qwen2' model is not an image-text-to-text model"):
        load_predictor(f"hf:{text_only}", options).predict(eval_set.samples[:1],
                                                           eval_set.image_root, "cot")
    # A SiQ-VL checkpoint named as hf, and an empty folder.
    fake_siqvl = tmp_path / "siqvl-ckpt"
    fake_siqvl.mkdir()
    (fake_siqvl / "config.json").write_text(json.dumps({"model_type": "siqvl"}))
    with pytest.raises(InputError, match="SiQ-VL checkpoint; evaluate it with --model siqvl:"):
        load_predictor(f"hf:{fake_siqvl}", options)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--model", f"hf:{empty}", "--data", str(digits), "--no-cache"]) == 2
    assert "no config.json" in capsys.readouterr().err
    # A bare path is told apart by its config.
    assert load_predictor(str(tiny_model), options).model_ref.kind == "hf"


def test_a_missing_image_names_the_sample(tiny_model: Path, digits: Path, tmp_path: Path,
                                          capsys) -> None:
    copy = tmp_path / "digits"
    shutil.copytree(digits, copy)
    victim = load_eval_set(copy).samples[5]
    (copy / victim.image.path).unlink()
    assert main(["eval", "--model", f"hf:{tiny_model}", "--data", str(copy), "--no-cache",
                 "--max-new-tokens", "2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"sample '{victim.id}': image file not found" in err
    assert not (tmp_path / "out").exists()  # no result written for a failed eval
