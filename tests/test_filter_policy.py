"""Policies: the shipped ones load; every mistake is an error naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.errors import InputError
from distill.filter.policy import POLICIES_DIR, load_policy, parse_policy, policy_from_dict
from distill.filter.signals import SIGNALS


@pytest.mark.parametrize("path", sorted(POLICIES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_load_and_round_trip(path: Path) -> None:
    policy = load_policy(path)
    assert policy.rules and all(signal in SIGNALS for signal in policy.rules)
    again = policy_from_dict(policy.as_dict())
    assert again.hash == policy.hash


def test_the_hash_ignores_comments_and_spelling_but_not_meaning() -> None:
    a = parse_policy("rules:\n  truncated: false\n  correctness: correct\n")
    b = parse_policy("# a comment\nrules:\n  truncated: {equals: false}   # same rule\n"
                     "  correctness: {equals: correct}\n")
    c = parse_policy("rules:\n  truncated: false\n  correctness: wrong\n")
    assert a.hash == b.hash != c.hash


def test_rules_decide_and_name_what_failed() -> None:
    policy = parse_policy("rules:\n  correctness: correct\n  length_tokens: {max: 100}\n"
                          "  majority_answer: {in: ['1', '2']}\n")
    good = {"correctness": "correct", "length_tokens": 50, "majority_answer": "1"}
    assert policy.failed_rules(good) == []
    bad = {"correctness": "wrong", "length_tokens": 500, "majority_answer": "3"}
    assert policy.failed_rules(bad) == ["correctness", "length_tokens", "majority_answer"]
    assert policy.failed_rules({}) == ["correctness", "length_tokens", "majority_answer"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, line, field, words", [
    ("name: x\nrules:\n  correctness: correct\n  trucated: false\n", 4, "rules.trucated",
     ["unknown signal 'trucated'", "did you mean 'truncated'"]),
    ("rules:\n  correctness: right\n", 2, "rules.correctness",
     ["one of correct, wrong, unparseable", "'right'"]),
    ("rules:\n  has_loop: {max: 1}\n", 2, "rules.has_loop.max", ["bool signal"]),
    ("rules:\n  length_tokens: {maxx: 5}\n", 2, "rules.length_tokens.maxx",
     ["unknown condition 'maxx'", "did you mean 'max'"]),
    ("rules:\n  length_tokens: {min: 10, max: 5}\n", 2, "rules.length_tokens",
     ["no trace could pass"]),
    ("rules:\n  truncated: 'no'\n", 2, "rules.truncated", ["bool signal"]),
    ("rules:\n  truncated: false\n  truncated: true\n", 3, "rules.truncated",
     ["duplicate key", "line 2"]),
    ("rules:\n  duplicate: none\n", 2, "rules.duplicate", ["'dedup' section"]),
    ("dedupe:\n  near: true\n", 1, "dedupe", ["did you mean 'dedup'"]),
    ("dedup:\n  threshold: 1.5\n", 2, "dedup.threshold", ["(0, 1]"]),
    ("dedup:\n  scope: images\n", 2, "dedup.scope", ["did you mean 'image'"]),
    ("per_item:\n  max_traces: 0\n", 2, "per_item.max_traces", ["positive integer"]),
    ("per_item:\n  prefer: shorter\n", 2, "per_item.prefer", ["did you mean 'shortest'"]),
    ("per_item:\n  teacher_preference: [a, a]\n", 2, "per_item.teacher_preference",
     ["twice"]),
    ("splits: train\n", 1, "splits", ["list of split names"]),
    ("rules: [correctness]\n", 1, "rules", ["map signal names"]),
    ("rules:\n  correctness: [correct\n", 3, None, ["not valid YAML"]),
])
def test_policy_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int,
                                               field: str | None, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_policy(path)
    error = caught.value
    assert error.file == str(path) and error.line == line and error.field == field
    for word in words:
        assert word in str(error), str(error)


def test_a_policy_typo_fails_the_cli_with_a_located_message(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from distill.cli import main

    path = write(tmp_path, "name: typo\nrules:\n  refusall: false\n")
    code = main(["filter", "--traces", str(tmp_path), "--store", str(tmp_path / "store"),
                 "--policy", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:3: field 'rules.refusall': unknown signal 'refusall'" in err
    assert "did you mean 'refusal'" in err
    assert not (tmp_path / "store").exists()  # nothing was started


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")
