"""Records: round-trips, strictness, and the JSON Schema export other tools rely on."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from pydantic import ValidationError

from distill.schemas import (
    RECORD_TYPES,
    DatasetManifest,
    EvalItem,
    EvalResult,
    ImageRef,
    JudgeIdentity,
    Judgement,
    ModelRef,
    Rejection,
    RunManifest,
    Sample,
    SamplingParams,
    ScoredTrace,
    ShardRef,
    StageManifest,
    Trace,
    content_hash,
    make_judgement_key,
    make_trace_key,
    same_answer_subject,
)
from distill.schemas.cli import export_schemas

SHA = "ab" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def make_sample(**overrides) -> Sample:
    fields = dict(id="s1", image=ImageRef(path="images/a.png", sha256=SHA),
                  question="What is the sum of the digits?", answer="12",
                  answer_type="number", category="sum", source="test")
    return Sample(**{**fields, **overrides})


def make_trace(sample: Sample, k: int = 0) -> Trace:
    sampling = SamplingParams(temperature=0.7, max_tokens=256, seed=1)
    key = make_trace_key(sample_hash=sample.content_hash(), teacher_id="knn", model="knn-v1",
                         prompt_hash=SHA, sampling=sampling, k=k)
    return Trace(trace_key=key, sample_id=sample.id, sample_hash=sample.content_hash(),
                 teacher_id="knn", engine="builtin", model="knn-v1", prompt_id="cot",
                 prompt_hash=SHA, sampling=sampling, k=k, raw_text="5 + 7 = 12\nAnswer: 12",
                 reasoning="5 + 7 = 12", final_answer="12", prompt_tokens=30,
                 completion_tokens=9, finish_reason="stop", latency_s=0.01)


JUDGE = JudgeIdentity(judge_id="judge", engine="openai", model="grader", prompt_id="rubric",
                      prompt_hash=SHA, sampling=SamplingParams(temperature=0.0, seed=0))


def make_rubric(trace: Trace, **overrides) -> Judgement:
    fields = dict(judgement_key=make_judgement_key(kind="rubric", subject=trace.trace_key,
                                                   judge=JUDGE),
                  kind="rubric", subject=trace.trace_key, sample_id=trace.sample_id,
                  sample_hash=trace.sample_hash, judge=JUDGE, trace_key=trace.trace_key,
                  teacher_id=trace.teacher_id, score=0.75, raw_score=4.0,
                  raw_text="Consistent.\nScore: 4", finish_reason="stop", latency_s=0.2)
    return Judgement(**{**fields, **overrides})


def every_record() -> list:
    sample = make_sample()
    trace = make_trace(sample)
    unlabeled = make_sample(id="s3", answer=None)
    subject = same_answer_subject(unlabeled.content_hash(), "a red car", "red automobile")
    shard = ShardRef(name="data/part-00000.jsonl", sha256=SHA, rows=3)
    return [
        sample,
        make_sample(id="s2", image=ImageRef.inline(b"\x89PNG\r\n", sha256=SHA),
                    answer="B", answer_type="choice", choices=["red", "blue"]),
        unlabeled,
        trace,
        make_rubric(trace),
        Judgement(judgement_key=make_judgement_key(kind="same_answer", subject=subject,
                                                   judge=JUDGE),
                  kind="same_answer", subject=subject, sample_id="s3",
                  sample_hash=unlabeled.content_hash(), judge=JUDGE,
                  answers=["a red car", "red automobile"], same=True, raw_text="Same: yes",
                  finish_reason="stop", latency_s=0.1),
        Rejection(stage="generate", key=trace.trace_key, reason="unparseable",
                  message="no final answer", raw="hmm"),
        ScoredTrace(sample=sample, trace=trace, signals={"correctness": "correct",
                    "truncated": False, "length_tokens": 9, "repetition_ratio": 0.1},
                    verdict="keep"),
        StageManifest(stage="ingest", created_at=NOW, image_root=".", shards=[shard]),
        DatasetManifest(version=SHA, created_at=NOW, trace_dir="gen", inputs=[shard],
                        policy={"require": ["correct"]}, policy_hash=SHA,
                        scorer_versions={"correctness": "1"}, teachers=["knn"],
                        counts={"keep": 3}, shards=[shard]),
        RunManifest(run_id="r1", created_at=NOW, stage="cot", dataset_version=SHA,
                    config={"lr": 1e-3}, config_hash=SHA, steps=10, checkpoint_path="final"),
        EvalResult(result_id=SHA, created_at=NOW, model=ModelRef(kind="siqvl", name="tiny"),
                   eval_set="digits-test", eval_set_hash=SHA, mode="cot",
                   generation={"max_new_tokens": 64}, metrics={"accuracy": 1.0},
                   items=[EvalItem(sample_id="s1", category="sum", gold="12",
                                   raw_output="Answer: 12", extracted="12",
                                   correctness="correct", output_tokens=4, latency_s=0.1)]),
    ]


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_json(record) -> None:
    text = record.model_dump_json()
    assert type(record).model_validate_json(text) == record


def test_every_record_kind_is_exported_and_validates_real_records(tmp_path) -> None:
    paths = {p.name: p for p in export_schemas(tmp_path)}
    assert set(paths) == {f"{name}.schema.json" for name in RECORD_TYPES}
    by_type = {type(r): r for r in every_record()}
    for name, model in RECORD_TYPES.items():
        schema = json.loads(paths[f"{name}.schema.json"].read_text())
        jsonschema.validate(json.loads(by_type[model].model_dump_json()), schema)
        bad = {**json.loads(by_type[model].model_dump_json()), "surprise": 1}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def sample_json(**changes) -> str:
    data = json.loads(make_sample().model_dump_json())
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"question": ...}, "question", "Field required"),
        ({"answer": 12}, "answer", "valid string"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"question": "   "}, "question", "blank"),
        ({"answer_type": "float"}, "answer_type", "number"),
        ({"answer": "twelve"}, "", "must be a number"),
        ({"answer_type": "yes_no", "answer": "maybe"}, "", "'yes' or 'no'"),
        ({"answer_type": "choice", "answer": "C", "choices": ["x", "y"]}, "", "letters"),
        ({"choices": ["x", "y"]}, "", "only allowed"),
        ({"id": "has space"}, "id", "pattern"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"image": {"path": "../secret.png", "sha256": SHA}}, "image.path", "escapes"),
        ({"image": {"path": "/etc/passwd", "sha256": SHA}}, "image.path", "absolute"),
        ({"image": {"path": "a.png", "sha256": "xyz"}}, "image.sha256", "pattern"),
        ({"image": {"sha256": SHA}}, "image", "exactly one"),
        ({"image": {"data": "%%%", "sha256": SHA}}, "image.data", "base64"),
    ],
)
def test_bad_samples_are_refused_naming_the_field(changes, field, fragment) -> None:
    with pytest.raises(ValidationError) as info:
        Sample.model_validate_json(sample_json(**changes))
    error = info.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert fragment in error["msg"]


def test_strict_types_do_not_coerce() -> None:
    with pytest.raises(ValidationError):
        Trace.model_validate_json(make_trace(make_sample()).model_dump_json()
                                  .replace('"k":0', '"k":"0"'))


def test_trace_key_changes_with_every_input_and_only_with_them() -> None:
    sample = make_sample()
    base = dict(sample_hash=sample.content_hash(), teacher_id="t", model="m",
                prompt_hash=SHA, sampling=SamplingParams(), k=0)
    key = make_trace_key(**base)
    assert key == make_trace_key(**base)
    variants = [
        {"sample_hash": make_sample(image=ImageRef(path="images/a.png", sha256="cd" * 32))
         .content_hash()},
        {"sample_hash": make_sample(question="What is the largest digit?").content_hash()},
        {"teacher_id": "t2"}, {"model": "m2"}, {"prompt_hash": "ef" * 32},
        {"sampling": SamplingParams(temperature=0.5)}, {"k": 1},
    ]
    keys = {make_trace_key(**{**base, **variant}) for variant in variants}
    assert key not in keys and len(keys) == len(variants)


def test_content_hash_ignores_key_order() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})


def test_gold_stays_in_the_sample_hash_exactly_as_before() -> None:
    """Gold becoming optional changed no hash of a sample that has gold (so no trace key
    and no dataset version); a sample without gold hashes differently from any with."""
    sample = make_sample()
    before = content_hash({"id": sample.id, "image_sha256": SHA, "question": sample.question,
                           "choices": None, "answer": "12", "answer_type": "number"})
    assert sample.content_hash() == before
    unlabeled = make_sample(answer=None)
    assert unlabeled.content_hash() != before and not unlabeled.has_gold
    assert Sample.model_validate_json(sample_json(answer=...)).answer is None
    # Without gold, the answer type still says how answers are read: choices stay checked.
    with pytest.raises(ValidationError, match="at least two choices"):
        make_sample(answer=None, answer_type="choice", choices=["only"])


def test_scored_trace_says_where_its_label_comes_from() -> None:
    trace = make_trace(make_sample())
    gold = ScoredTrace(sample=make_sample(), trace=trace, signals={}, verdict="keep")
    assert (gold.label, gold.label_source) == ("12", "gold")
    derived = ScoredTrace(sample=make_sample(answer=None), trace=trace, verdict="keep",
                          signals={"label": "13", "label_source": "consensus"})
    assert (derived.label, derived.label_source) == ("13", "consensus")
    none = ScoredTrace(sample=make_sample(answer=None), trace=trace, verdict="drop",
                       signals={"label": "", "label_source": "none"})
    assert (none.label, none.label_source) == (None, None)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"score": None}, "needs trace_key, score"),
        ({"score": 1.5}, "less than or equal to 1"),
        ({"judgement_key": "cd" * 32}, "does not match"),
        ({"same": True}, "belong to 'same_answer'"),
        ({"subject": "cd" * 32}, "subject is its trace_key"),
    ],
)
def test_bad_judgements_are_refused(overrides, fragment) -> None:
    with pytest.raises(ValidationError, match=fragment):
        make_rubric(make_trace(make_sample()), **overrides)


def test_a_shard_ref_is_the_one_reader_of_its_name() -> None:
    ref = ShardRef(name="traces/val/part-00003.jsonl", sha256="0" * 64, rows=2)
    assert (ref.split, ref.file) == ("val", "part-00003.jsonl")
    assert ref.beside("samples") == "samples/val/part-00003.jsonl"
    assert ref.in_folder("traces") and not ref.in_folder("samples")
    assert not ShardRef(name="traces/part-00003.jsonl", sha256="0" * 64,
                        rows=2).in_folder("traces")
    assert "split" not in ref.model_dump()  # derived, never stored
