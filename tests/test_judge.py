"""`distill judge` against a real judge behind the built-in OpenAI-protocol server on
loopback: the built-in digits judge grades for real, and on a fixed script some replies
are the malformed ones judge models write. Killed twice mid-run and rerun: nothing lost,
nothing asked twice; a new filter policy afterwards asks the judge nothing."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.core.errors import InputError
from distill.core.shards import iter_records
from distill.filter.judgements import open_judge_dir
from distill.filter.pipeline import FilterOptions, run_filter
from distill.filter.policy import parse_policy
from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions, grade
from distill.generate.judges import BadReply, load_judge, parse_same, parse_score
from distill.generate.judging import JudgeOptions, run_judge
from distill.generate.runner import GenerateOptions, run_generate
from distill.ingest.pipeline import IngestOptions, ingest, open_source
from distill.schemas import Judgement, Rejection, ScoredTrace, Trace, make_judgement_key
from testing.filter_data import make_trace, write_generate_dir
from testing.generate import (
    builtin_teacher,
    kill_after,
    leftovers,
    lines_written,
    write_teachers,
)
from testing.openai_server import JUDGE_EXPECTED_REASON, EngineServer, judge_script
from tests.conftest import png_bytes, write_jsonl

REPO = Path(__file__).resolve().parents[1]


# --- replies are read strictly ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Looks consistent.\nScore: 4", (4.0, 0.75)),
    ("**Score:** 5", (5.0, 1.0)),
    ("Score: 1/5.", (1.0, 0.0)),
    ("score: 3\nSCORE: 3", (3.0, 0.5)),
])
def test_valid_scores_are_read_and_normalised(text, expected) -> None:
    assert parse_score(text, (1, 5)) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("I think it is fine.", "judge_no_score"),
    ("Score: 7", "judge_score_out_of_range"),
    ("Score: 0", "judge_score_out_of_range"),
    ("Score: 3.5", "judge_bad_score"),
    ("Score: 4/10", "judge_bad_score"),
    ("Score: high", "judge_bad_score"),
    ("Score: 2\nScore: 4", "judge_ambiguous_score"),
    ("", "judge_no_score"),
])
def test_invalid_scores_are_refused_with_their_reason(text, reason) -> None:
    with pytest.raises(BadReply) as info:
        parse_score(text, (1, 5))
    assert info.value.reason == reason


def test_same_verdicts_are_read_strictly() -> None:
    assert parse_same("They both say red.\nSame: yes") is True
    assert parse_same("**Same:** No") is False
    for text in ("They are alike.", "Same: maybe", "Same: yes\nSame: no"):
        with pytest.raises(BadReply) as info:
            parse_same(text)
        assert info.value.reason == "judge_no_verdict"


def test_the_builtin_judge_grades_what_it_reads() -> None:
    assert grade([3, 5], [3, 5], "sum", "8")[0] == 5
    assert grade([3, 5], [5, 3], "sum", "8")[0] == 5  # order does not matter
    assert grade([3, 5], [3, 6], "sum", "9")[0] == 3  # consistent, but a misread digit
    assert grade([3, 5], [3, 5], "sum", "9")[0] == 1  # the answer does not follow
    assert grade([3, 5], None, "sum", "8")[0] == 1  # names no digits


def test_a_judge_file_needs_a_judge_rubric(tmp_path: Path) -> None:
    path = tmp_path / "judge.yaml"
    path.write_text("id: j\nengine: builtin\nmodel: judge\nprompt: cot\n")
    with pytest.raises(InputError, match="a judge prompt is needed") as info:
        load_judge(path)
    assert info.value.field == "prompt"
    path.write_text("id: j\nengine: builtin\nmodel: judge\nprompt: judge-same\n")
    with pytest.raises(InputError, match="needs a rubric"):
        load_judge(path)


# --- a judge run through the server ----------------------------------------------------------


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, Path]:
    """(traces folder, root): 24 digits items without gold, two teachers x k=2."""
    root = tmp_path_factory.mktemp("judge")
    rows, total = open_source("digits", None, counts={"train": 24})
    ingest(rows, IngestOptions(out=root / "ingest", shard_size=12, withhold_gold=("train",),
                               gold_out=root / "gold.jsonl"), total=total)
    teachers = write_teachers(root / "teachers.yaml", {"knn": builtin_teacher("knn"),
                                                       "logreg": builtin_teacher("logreg")})
    run_generate(GenerateOptions(root / "ingest", str(teachers), root / "traces"))
    return root / "traces", root


@pytest.fixture(scope="module")
def server():
    engine = BuiltinDigitsEngine("judge", BuiltinOptions())
    with EngineServer(engine, script=judge_script, latency_s=0.01) as running:
        yield running


def judge_file(path: Path, base_url: str, same_prompt: str | None = None) -> Path:
    path.write_text(yaml.safe_dump({
        "id": "remote-judge", "engine": "openai", "model": "digits-judge",
        "prompt": "judge-rubric", "same_prompt": same_prompt,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256, "seed": 0},
        "batch_size": 8,
        "options": {"base_url": base_url, "api_key_env": None, "max_concurrency": 2,
                    "timeout_s": 10.0, "max_attempts": 2, "backoff_initial_s": 0.01,
                    "backoff_max_s": 0.05}}))
    return path


def outcomes(out: Path) -> tuple[list[Judgement], list[Rejection]]:
    judgements = [j for p in sorted(out.glob("judgements/*/part-*.jsonl"))
                  for j in iter_records(p, Judgement)]
    rejects = [r for p in sorted(out.glob("rejects/*/part-*.jsonl"))
               for r in iter_records(p, Rejection)]
    return judgements, rejects


def asked(server: EngineServer) -> int:
    return sum(server.attempts.values())


@pytest.fixture(scope="module")
def reference(pool, server, tmp_path_factory) -> tuple[Path, Path]:
    """(judge file, judge folder) of one uninterrupted run."""
    traces, _ = pool
    folder = tmp_path_factory.mktemp("reference")
    judge = judge_file(folder / "judge.yaml", server.base_url)
    run_judge(JudgeOptions(traces, str(judge), folder / "out"))
    return judge, folder / "out"


def test_every_trace_gets_one_judgement_or_one_rejection_with_its_reason(pool, reference):
    traces_dir, _ = pool
    judge, out = reference
    traces = [t for p in sorted(traces_dir.glob("traces/*/part-*.jsonl"))
              for t in iter_records(p, Trace)]
    judgements, rejects = outcomes(out)
    identity = load_judge(judge).rubric
    wanted = {make_judgement_key(kind="rubric", subject=t.trace_key, judge=identity)
              for t in traces}
    assert {j.judgement_key for j in judgements} | {r.key for r in rejects} == wanted
    assert len(judgements) + len(rejects) == len(traces) == 96
    assert len({j.trace_key for j in judgements}) == len(judgements)
    # The scripted malformed replies are rejected, permanently, each with its reason...
    assert {r.reason for r in rejects} == set(JUDGE_EXPECTED_REASON.values())
    assert all(r.permanent and r.stage == "judge" and r.raw for r in rejects)
    # ...and the real grading is informative: consistent rationales score high.
    scores = {j.score for j in judgements}
    assert 1.0 in scores and scores <= {0.0, 0.25, 0.5, 0.75, 1.0}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "judge" and manifest["counts"]["judgements"] == len(judgements)


def test_judgements_become_signals_and_rejections_stay_visible(pool, reference, tmp_path):
    traces, _ = pool
    _, out = reference
    judgements, rejects = outcomes(out)
    policy = parse_policy("name: judged\nrules: {judge_score: {min: 0.75}}\nsplits: null\n"
                          "dedup: {exact: false, near: false}\nper_item: {max_traces: null}\n")
    result = run_filter(FilterOptions(traces=traces, store=tmp_path / "store", policy=policy,
                                      judgements=out))
    rows = [ScoredTrace.model_validate_json(line) for ref in result.manifest.scored_shards
            for line in (tmp_path / "store" / "versions" / result.version / ref.name)
            .read_text().splitlines()]
    status = {r.trace.trace_key: r.signals for r in rows}
    by_trace = {j.trace_key: j for j in judgements}
    for key, signals in status.items():
        if key in by_trace:
            assert signals["judge_status"] == "scored"
            assert signals["judge_score"] == pytest.approx(by_trace[key].score)
        else:
            assert signals["judge_status"] == "rejected" and "judge_score" not in signals
            assert signals["judge_reason"] in JUDGE_EXPECTED_REASON.values()
    assert sum(s["judge_status"] == "rejected" for s in status.values()) == len(rejects)
    kept = [r for r in rows if r.verdict == "keep"]
    assert kept and all(r.signals["judge_score"] >= 0.75 for r in kept)


def test_judgements_of_other_traces_are_refused(pool, reference, tmp_path) -> None:
    _, out = reference
    with pytest.raises(InputError, match="not of --traces"):
        open_judge_dir(out, tmp_path)


def test_judge_killed_twice_then_rerun_loses_and_repeats_nothing(pool, server, reference,
                                                                  tmp_path):
    traces, _ = pool
    judge, reference_out = reference
    expected_j, expected_r = outcomes(reference_out)
    expected = {json.dumps(j.content_fields(), sort_keys=True) for j in expected_j}
    total = len(expected_j) + len(expected_r)
    out = tmp_path / "judge"
    command = [sys.executable, "-m", "distill", "judge", "--traces", str(traces), "--judge",
               str(judge), "--out", str(out), "--flush-every", "1", "--flush-seconds", "0"]
    env = {**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    rng = random.Random(17)
    kills = 0
    for _ in range(2):
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        done = lines_written(out)
        target = done + rng.randint(1, max(1, (total - done) // 3))
        kills += kill_after(process, out, target, rng.uniform(0, 0.02))
        process.wait(timeout=60)
    assert kills == 2, "a kill did not land while the judge was working"
    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert final.returncode == 0, final.stderr
    judgements, rejects = outcomes(out)
    keys = [j.judgement_key for j in judgements] + [r.key for r in rejects]
    assert len(keys) == len(set(keys)) == total  # none lost, none duplicated
    assert {json.dumps(j.content_fields(), sort_keys=True) for j in judgements} == expected
    assert {r.key for r in rejects} == {r.key for r in expected_r}
    assert not leftovers(out)

    # From here on the judge is never asked again: not by a rerun, not by a new policy.
    before = asked(server)
    again = run_judge(JudgeOptions(traces, str(judge), out))
    assert again.judged == again.rejected == 0 and again.already_done == total
    store = tmp_path / "store"
    loose = parse_policy("name: loose\nrules: {judge_score: {min: 0.25}}\n")
    strict = parse_policy("name: strict\nrules: {judge_score: {min: 1.0}}\n")
    first = run_filter(FilterOptions(traces=traces, store=store, policy=loose, judgements=out))
    second = run_filter(FilterOptions(traces=traces, store=store, policy=strict,
                                      judgements=out))
    assert second.scored_shards == 0 and second.reused_shards == first.scored_shards
    assert second.version != first.version
    assert second.manifest.counts["keep"] < first.manifest.counts["keep"]
    assert asked(server) == before



# --- free-text answers no rule can compare ---------------------------------------------------


def text_judge(body: dict) -> str:
    """A judge on a fixed script: two answers are the same when their first words (once
    articles are gone) match -- a colour, an animal; every rationale scores 4."""
    user = "".join(part["text"] for message in body["messages"] if message["role"] == "user"
                   for part in message["content"] if part["type"] == "text")
    found = dict(re.findall(r"^Answer ([AB]): (.+)$", user, re.MULTILINE))
    if not found:
        return "Plausible.\nScore: 4"
    first = [found[k].split()[0] for k in "AB"]
    return f"Same: {'yes' if first[0] == first[1] else 'no'}"


TEXT_ANSWERS = {"car": ["a red car", "red automobile", "blue car"],
                "pet": ["a dog", "the dog", "cat"]}


def test_free_text_answers_are_compared_by_the_judge(tmp_path) -> None:
    for name, seed in (("car.png", 1), ("pet.png", 2)):
        (tmp_path / name).write_bytes(png_bytes(seed))
    write_jsonl(tmp_path / "items.jsonl", [
        {"id": "car", "image": "car.png", "question": "What is shown in the picture?"},
        {"id": "pet", "image": "pet.png", "question": "What animal is in the picture?"}])
    rows, _ = open_source("jsonl", tmp_path / "items.jsonl")
    ingest(rows, IngestOptions(out=tmp_path / "ingest"))
    write_generate_dir(tmp_path / "gen", tmp_path / "ingest", lambda sample: [
        make_trace(sample, f"t{i}", 0, f"I look at the picture.\nAnswer: {answer}")
        for i, answer in enumerate(TEXT_ANSWERS[sample.id])])
    with EngineServer(BuiltinDigitsEngine("judge", BuiltinOptions()), script=text_judge) as srv:
        judge = judge_file(tmp_path / "judge.yaml", srv.base_url, same_prompt="judge-same")
        summary = run_judge(JudgeOptions(tmp_path / "gen", str(judge), tmp_path / "judged"))
    judgements, rejects = outcomes(tmp_path / "judged")
    assert not rejects and summary.judged == 6 + 3 + 1  # 6 rationales, 3 + 1 answer pairs
    pairs = {tuple(j.answers): j.same for j in judgements if j.kind == "same_answer"}
    assert pairs == {("blue car", "red automobile"): False, ("blue car", "red car"): False,
                     ("red automobile", "red car"): True, ("cat", "dog"): False}

    def labels(judgements: Path | None, store: str) -> dict[str, tuple[str, str]]:
        policy = parse_policy("name: all\nsplits: null\nrules: {}\n")
        result = run_filter(FilterOptions(traces=tmp_path / "gen", store=tmp_path / store,
                                          policy=policy, judgements=judgements))
        folder = tmp_path / store / "versions" / result.version
        return {r.sample.id: (r.signals["label"], r.signals["label_source"])
                for ref in result.manifest.scored_shards
                for r in iter_records(folder / ref.name, ScoredTrace)}

    # No rule says 'a red car' is a 'red automobile': a three-way tie, no label...
    assert labels(None, "rules") == {"car": ("", "none"), "pet": ("dog", "consensus")}
    # ...the judge does, and the two red answers outvote the blue one.
    assert labels(tmp_path / "judged", "store-judged") == {"car": ("red automobile", "consensus"),
                                                     "pet": ("dog", "consensus")}


def test_a_real_model_that_writes_no_score_is_rejected_never_crashes(tmp_path):
    """The hf engine on a tiny random VLM as the judge: its replies are no scores, and
    every one becomes a rejection with its reason; the filter shows them as rejected."""
    import torch

    from tests.helpers.tiny_vlm import build_tiny_vlm

    torch.set_num_threads(1)
    rows, total = open_source("digits", None, counts={"train": 4})
    ingest(rows, IngestOptions(out=tmp_path / "ingest"), total=total)
    teachers = write_teachers(tmp_path / "teachers.yaml", {"knn": builtin_teacher("knn", k=1)})
    run_generate(GenerateOptions(tmp_path / "ingest", str(teachers), tmp_path / "traces"))
    judge = tmp_path / "judge.yaml"
    judge.write_text(yaml.safe_dump({
        "id": "tiny", "engine": "hf", "model": str(build_tiny_vlm(tmp_path / "vlm")),
        "same_prompt": None, "sampling": {"temperature": 0.0, "max_tokens": 4, "seed": 0},
        "options": {"micro_batch_size": 4}}))
    summary = run_judge(JudgeOptions(tmp_path / "traces", str(judge), tmp_path / "judged"))
    judgements, rejects = outcomes(tmp_path / "judged")
    assert summary.judged == len(judgements) == 0 and len(rejects) == 4
    assert {r.reason for r in rejects} == {"judge_no_score"} and all(r.raw for r in rejects)
    result = run_filter(FilterOptions(traces=tmp_path / "traces", store=tmp_path / "store",
                                      policy=parse_policy("name: all\nrules: {}\n"),
                                      judgements=tmp_path / "judged"))
    assert result.stats.judge == {"rejected:judge_no_score": 4}
