"""Judging: an answer against the gold answer, and two answers against each other.

Every verdict is ``correct``, ``wrong`` or ``unparseable`` with a reason from one small
vocabulary (``REASONS``), so a misread format shows up as a count, not as a silent drop
in accuracy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from distill.core.answers.extract import ParsedOutput, parse_output
from distill.core.answers.numbers import Number, numbers_match
from distill.core.answers.phrases import CJK
from distill.core.answers.symbolic import formulas_equal, looks_symbolic
from distill.core.answers.text import normalize_text, plain
from distill.core.answers.values import AnswerSpec, NoValue, Value, gold_value, read_value
from distill.core.prompts import builtin_answer_format
from distill.schemas import Sample, Trace

Correctness = Literal["correct", "wrong", "unparseable"]

# Why a verdict is what it is. Unparseable: no answer of the asked type could be read.
UNPARSEABLE_REASONS = {
    "truncated": "cut at the token limit, or thinking never closed",
    "empty_output": "the output is empty",
    "no_answer": "no final-answer statement found",
    "empty_answer": "an answer marker with nothing after it",
    "hedged": "two candidate answers ('3 or 4', 'A or B'), or avowed doubt",
    "multiple_answers": "several different answers in the final statement",
    "not_a_number": "the final statement holds no number",
    "ambiguous_number": "a number whose separator reads two ways in an output that writes "
                        "both decimal conventions ('1.500' beside '1,5' and '2.5')",
    "not_an_option": "the final statement names no option of this item",
    "no_yes_no": "the final statement says neither yes nor no",
    "bad_gold": "the gold answer itself does not read as its type",
}
WRONG_REASONS = {
    "wrong_value": "a different number",
    "near_miss": "within 1% of the gold but outside its precision/tolerance",
    "wrong_scale": "the gold times a power of ten (percent vs fraction, units?)",
    "wrong_option": "a different option",
    "wrong_yes_no": "the opposite yes/no",
    "wrong_text": "a different text answer",
}
REASONS = {"correct": "matches the gold answer", **UNPARSEABLE_REASONS, **WRONG_REASONS}
_NEGATION_WORDS = {"not", "no", "never", "neither", "nor", "none", "or"}
# A text answer may wrap the gold phrase in a few words of its own ('dark blue' for
# 'blue'), or in any number of words restating the question ("India had the highest GDP
# growth in 2021" for 'India').
TEXT_CONTAINS_EXTRA_WORDS = 2
# A concluding sentence may state the gold phrase with words of its own ("She is holding a
# pineapple"), negation and alternatives excluded.
TEXT_SENTENCE_WORDS = 12
# ", not a hawk", "rather than X", "，而不是X": what a statement rules out is not its answer.
_CONTRAST = re.compile(r"(?:,\s*|\s+)(?:but\s+)?(?:not|rather than|instead of)\s+[^,;.!?]*",
                       re.IGNORECASE)
_CJK_NEGATION = ("不是", "并非", "而非", "没有", "不")
_FUNCTION_WORDS = frozenset({"is", "was", "are", "were", "it", "its", "it's", "answer", "has",
                             "had", "have", "of", "in", "on", "at", "to", "this", "that",
                             "shown", "image", "figure", "chart", "picture", "here"})


@dataclass(frozen=True)
class Verdict:
    """A judgment with its reason (a key of ``REASONS``) and what was read."""

    correctness: Correctness
    reason: str
    answer: str | None = None  # the answer as stated
    canonical: str | None = None  # its canonical spelling, when it read as the type
    marker: str | None = None  # the kind of statement it came from


def judge(predicted: str | None, sample: Sample) -> Correctness:
    """Compare an extracted answer with the sample's gold answer, by answer type."""
    return judge_answer(predicted, sample).correctness


def judge_answer(predicted: str | None, sample: Sample, decimal: str | None = None) -> Verdict:
    """``judge`` with its reason. ``decimal``: the convention the output's numbers were read
    with (``ParsedOutput.decimal``), when the answer comes from a parsed output."""
    spec = AnswerSpec.of(sample)
    if decimal is not None and decimal != spec.decimal:
        spec = replace(spec, decimal=decimal)
    value = read_value(predicted, spec)
    if isinstance(value, NoValue):
        return Verdict("unparseable", value.reason, predicted)
    gold = gold_value(_gold_statement(sample.answer, spec), spec)
    if isinstance(gold, NoValue):
        return Verdict("unparseable", "bad_gold", predicted, value.canonical)
    reason = _compare(value, gold, spec, predicted or "", sample.answer)
    return Verdict("correct" if reason == "correct" else "wrong", reason, predicted,
                   value.canonical)


# A gold answer longer than this, or boxed, is a worked solution (math-verify's and MATH's
# golds are): its final answer is read out of it like a model's.
GOLD_PLAIN_MAX_CHARS = 80


def _gold_statement(answer: str, spec: AnswerSpec) -> str:
    if len(answer) <= GOLD_PLAIN_MAX_CHARS and "\\boxed" not in answer:
        return answer
    parsed = parse_output(answer, spec)
    return parsed.final_answer if parsed.reason == "ok" and parsed.final_answer else answer


def judge_output(text: str, sample: Sample, *, answer_format: str | None = None,
                 finish_reason: str | None = None) -> Verdict:
    """Read a raw output's final answer (see ``parse_output``) and judge it."""
    parsed = read_output(text, sample, answer_format=answer_format, finish_reason=finish_reason)
    return verdict_of(parsed, sample)


def read_output(text: str, sample: Sample | AnswerSpec, *, answer_format: str | None = None,
                finish_reason: str | None = None) -> ParsedOutput:
    """``parse_output`` with the item's answer spec: what generate, filter and eval read."""
    return parse_output(text, AnswerSpec.of(sample), answer_format=answer_format,
                        finish_reason=finish_reason)


def read_trace(trace: Trace, sample: Sample | AnswerSpec) -> ParsedOutput:
    """A stored trace's raw text read again by today's rules: its prompt's answer format
    first (a trace written before formats were recorded gets its built-in prompt's, when
    the hash still matches), a truncated output unparseable. The filter's scorers and the
    judge run's pairs of answers read traces through here, so they count the same answers."""
    answer_format = trace.answer_format or builtin_answer_format(trace.prompt_id,
                                                                 trace.prompt_hash)
    return read_output(trace.raw_text, sample, answer_format=answer_format,
                       finish_reason=trace.finish_reason)


def verdict_of(parsed: ParsedOutput, sample: Sample) -> Verdict:
    """The verdict on an already parsed output (no second reading)."""
    if parsed.final_answer is None or parsed.reason != "ok":
        return Verdict("unparseable", "no_answer" if parsed.reason == "ok" else parsed.reason,
                       parsed.final_answer, None, parsed.marker)
    verdict = judge_answer(parsed.final_answer, sample, parsed.decimal)
    return Verdict(verdict.correctness, verdict.reason, verdict.answer, verdict.canonical,
                   parsed.marker)


def _compare(value: Value, gold: Value, spec: AnswerSpec, predicted: str, gold_text: str) -> str:
    if spec.answer_type == "number":
        assert value.number is not None and gold.number is not None
        return _compare_numbers(value.number, gold.number, spec)
    if spec.answer_type == "choice":
        return "correct" if value.canonical == gold.canonical else "wrong_option"
    if spec.answer_type == "yes_no":
        return "correct" if value.canonical == gold.canonical else "wrong_yes_no"
    return ("correct" if _text_match(value, gold, predicted, gold_text, spec.question_words)
            else "wrong_text")


def _compare_numbers(predicted: Number, gold: Number, spec: AnswerSpec) -> str:
    if _numbers_match(predicted, gold, spec):
        return "correct"
    target = gold.value
    if target and abs(predicted.value - target) <= 0.01 * abs(target):
        return "near_miss"
    if target and predicted.value:
        ratio = abs(predicted.value / target)
        for power in (100.0, 1000.0, 0.01, 0.001):
            if abs(ratio - power) <= 1e-6 * power:
                return "wrong_scale"
    return "wrong_value"


def _numbers_match(predicted: Number, gold: Number, spec: AnswerSpec) -> bool:
    """``numbers_match`` with the item's precision and tolerance, the prediction also
    taken in the scale the question names ('How many million units?': 1,250,000 is
    1.25)."""
    candidates = [predicted, *(Number(predicted.value / scale, predicted.decimals)
                               for scale in spec.scales)]
    return any(numbers_match(candidate, gold, precision=spec.precision,
                             relative_tolerance=spec.relative_tolerance)
               for candidate in candidates)


def _cjk_contains(predicted: str, gold: str) -> bool:
    """Chinese has no spaces between words: the gold phrase inside the statement counts
    unless a negation stands right before it ('而不是自行车') or it is ruled out after."""
    index = predicted.rfind(gold)
    if index == -1:
        return False
    before = predicted[max(0, index - 3):index]
    return not any(before.endswith(word) for word in _CJK_NEGATION)


def _text_match(value: Value, gold: Value, predicted: str, gold_text: str,
                question_words: frozenset[str] = frozenset()) -> bool:
    """Free text: equal after ``normalize_text``; or both numbers that match; or the gold
    phrase stated whole in a short answer with no negation or alternative ('the circle'
    ~ 'circle', 'a red circle' ~ 'red circle'); or, for formulas, the same compact
    spelling (see ``symbolic``)."""
    if value.canonical == gold.canonical:
        return True
    if value.number is not None and gold.number is not None:
        return numbers_match(value.number, gold.number)
    if CJK.search(gold.canonical):
        return _cjk_contains(value.canonical, gold.canonical)
    kept = normalize_text(_CONTRAST.sub(" ", plain(predicted))) if predicted else ""
    if kept and kept != value.canonical:  # "a peregrine falcon, not a hawk": judge the pick
        value = Value(kept, value.number)
    words = value.canonical.split()
    gold_words = gold.canonical.split()
    if gold_words and f" {gold.canonical} " in f" {value.canonical} ":
        extra = set(words) - set(gold_words)
        if not extra & _NEGATION_WORDS and (
                len(words) <= len(gold_words) + TEXT_CONTAINS_EXTRA_WORDS
                or len(words) <= TEXT_SENTENCE_WORDS
                or extra <= question_words | _FUNCTION_WORDS):
            return True
    if looks_symbolic(gold_text) and looks_symbolic(predicted):
        return formulas_equal(gold_text, predicted)
    return False


# --- answers compared with each other (consensus, agreement) ------------------------------


def canonical_answer(predicted: str | None, spec: Sample | AnswerSpec) -> str | None:
    """One spelling per meaning, so answers can be counted and compared (agreement, votes).

    '15', '15.0' and '15 apples' -> '15' (rounded to the item's precision when it has
    one); '(B)' and the option's text -> 'B'; 'Yes.' -> 'yes'; text -> ``normalize_text``.
    None when no answer of the asked type is there."""
    value = read_value(predicted, AnswerSpec.of(spec))
    return None if isinstance(value, NoValue) else value.canonical


def same_answer(a: str | None, b: str | None, spec: Sample | AnswerSpec) -> bool:
    """Whether two extracted answers say the same thing for this item, by the rules that
    compare an answer with gold (precision and tolerance included), with no gold needed.

    Symmetric: with a tolerance or rounding, either may play the gold's part. Two answers
    that do not read as the asked type are never the same."""
    spec = AnswerSpec.of(spec)
    first, second = read_value(a, spec), read_value(b, spec)
    if isinstance(first, NoValue) or isinstance(second, NoValue):
        return False
    if first.canonical == second.canonical:
        return True
    if spec.answer_type == "number":
        assert first.number is not None and second.number is not None
        return (_numbers_match(first.number, second.number, spec)
                or _numbers_match(second.number, first.number, spec))
    if spec.answer_type == "text":
        return (_text_match(first, second, a or "", b or "", spec.question_words)
                or _text_match(second, first, b or "", a or "", spec.question_words))
    return False

