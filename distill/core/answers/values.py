"""What an answer means for its item, independent of the gold answer: ``AnswerSpec`` (the
answer type, options, precision) and ``read_value`` (statement -> typed value or the
reason there is none). Judging against gold and comparing two answers both build on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from distill.core.answers.languages import decimal_of
from distill.core.answers.numbers import (
    NotANumber,
    Number,
    read_number,
    round_half_up,
    scan_numbers,
)
from distill.core.answers.options import NoOption, read_choice, read_yes_no
from distill.core.answers.phrases import ZH_DOUBT_PATTERN
from distill.core.answers.text import MAX_STATEMENT_CHARS, normalize_text, plain
from distill.schemas import Sample
from distill.schemas.sample import AnswerType

# Sample.meta keys the judge reads (documented on Sample): decimals the gold answer is
# rounded to (MathVista's ``precision``), and a relative tolerance for number answers
# (ChartQA's relaxed accuracy: 0.05).
PRECISION_KEY = "precision"
TOLERANCE_KEY = "relative_tolerance"
# The item's language (a BCP 47 / ISO 639 code, 'fr', 'de-CH'): how its numbers are written
# (decimal comma or point, ``languages.decimal_of``).
LANGUAGE_KEY = "language"

_SCALE_WORDS = {"thousand": 1e3, "thousands": 1e3, "million": 1e6, "millions": 1e6,
                "billion": 1e9, "billions": 1e9}
_WORD = re.compile(r"[a-z]+")
# An image placeholder of the prompt ('<image 2>', 'image 2>'), normalised: never an answer.
_PLACEHOLDER = re.compile(r"image \d+")
_TEXT_DOUBT = re.compile(r"\b(?:cannot|can't|unable to) (?:be )?(?:determine|tell|say|see)\b|"
                         r"\bnot sure\b|\bunclear\b", re.IGNORECASE)


@dataclass(frozen=True)
class AnswerSpec:
    """How an item's answers are read and compared: its type, its options, the decimals
    its gold is rounded to and an optional relative tolerance. The gold answer itself is
    not part of it, so two teachers' answers can be compared with no gold at all."""

    answer_type: AnswerType
    choices: tuple[str, ...] = ()
    precision: int | None = None
    relative_tolerance: float | None = None
    # Numbers the question states: a reply restating them is read by the number it adds.
    given: tuple[float, ...] = ()
    # Scales the question names ("How many million units"): 1,250,000 is 1.25 of them.
    scales: tuple[float, ...] = ()
    # The question's words: a text answer may restate them around the gold phrase.
    question_words: frozenset[str] = frozenset()
    # The item's language, and the decimal convention numbers are read with ('comma',
    # 'point', or None: a lone '1,000' is a thousand, '1,22' a decimal comma).
    language: str | None = None
    decimal: str | None = None
    # A yes/no question's proposition, its words in order ("Is the red bar taller than the
    # blue bar?" -> red bar taller than blue bar): a reply that restates it settles it.
    proposition: tuple[str, ...] = ()

    @classmethod
    def of(cls, sample: Sample | AnswerSpec) -> AnswerSpec:
        if isinstance(sample, AnswerSpec):
            return sample
        language = sample.meta.get(LANGUAGE_KEY)
        return _spec(sample.answer_type, tuple(sample.choices) if sample.choices else (),
                     _meta_int(sample.meta.get(PRECISION_KEY)),
                     _meta_float(sample.meta.get(TOLERANCE_KEY)),
                     sample.question if sample.answer_type in ("number", "text", "yes_no")
                     else "",
                     language if isinstance(language, str) and language else None)


@lru_cache(maxsize=4096)
def _spec(answer_type: AnswerType, choices: tuple[str, ...], precision: int | None,
          tolerance: float | None, question: str, language: str | None = None) -> AnswerSpec:
    question = question[:2000]
    given = tuple(number.value for number in scan_numbers(question)) if question else ()
    words = frozenset(normalize_text(question).split()) if answer_type == "text" else frozenset()
    scales = tuple(sorted({_SCALE_WORDS[w] for w in _WORD.findall(question.lower())
                           if w in _SCALE_WORDS})) if answer_type == "number" else ()
    if answer_type == "yes_no":
        return AnswerSpec(answer_type, choices, precision, tolerance, language=language,
                          decimal=decimal_of(language), proposition=_proposition(question))
    return AnswerSpec(answer_type, choices, precision, tolerance, given, scales, words,
                      language, decimal_of(language))


# The auxiliary a yes/no question opens with, and words a restatement may leave out.
_AUXILIARY = re.compile(r"^\s*(?:is|are|was|were|does|do|did|can|could|has|have|had|will|would|"
                        r"should)\b", re.IGNORECASE)
_FILLER = frozenset({"a", "an", "the", "in", "this", "that", "image", "picture", "figure", "there",
                     "it", "is", "are", "was", "were", "does", "do", "did", "shown"})
_NEGATION_WORDS = frozenset({"not", "no", "never", "neither", "nor"})


def _proposition(question: str) -> tuple[str, ...]:
    """The content words of a yes/no question's last clause, in order; empty when the
    question does not open with an auxiliary (no proposition to restate)."""
    clause = re.split(r"[.:;]\s", question.strip())[-1]
    if not _AUXILIARY.match(clause) or " or " in f" {clause.lower()} ":
        return ()
    words = normalize_text(_AUXILIARY.sub("", clause)).split()
    return tuple(word for word in words if word not in _FILLER)


def read_restatement(statement: str, proposition: tuple[str, ...]) -> str | None:
    """'yes' when the statement restates the question's proposition (every content word, in
    the question's order), 'no' when it restates it with a negation; None otherwise. A
    paraphrase ('shorter' for 'not taller') or a swap ('the blue bar is taller than the red
    one') is not read: the model tier reads those (``model_tier``)."""
    if len(proposition) < 2:
        return None
    words = [w for w in normalize_text(statement.replace("n't", " not")).split()
             if w not in _FILLER]
    position, negated, previous = 0, False, ""
    for word in words:
        if position < len(proposition) and word == proposition[position]:
            negated = negated or previous in _NEGATION_WORDS  # "is not taller", "isn't on"
            position += 1
        previous = word
    if position < len(proposition):
        return None
    return "no" if negated else "yes"


def _meta_int(value: object) -> int | None:
    """MathVista stores precision as 1.0, 2.0 or null; anything else is ignored."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value == int(value) and 0 <= value <= 12 else None


def _meta_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < 1 else None


@dataclass(frozen=True)
class Value:
    """An answer of the asked type: its canonical spelling (one per meaning, the same for
    '15', '15.0' and '15 apples'; 'B' for '(B)' and the option's text; 'yes' for 'Yes.')
    and, for numbers, the number read."""

    canonical: str
    number: Number | None = None


@dataclass(frozen=True)
class NoValue:
    """No answer of the asked type; ``reason`` says why (the judge's vocabulary)."""

    reason: str


def read_value(statement: str | None, spec: AnswerSpec) -> Value | NoValue:
    """The typed value of an answer statement, or why it has none."""
    if statement is None or not statement.strip():
        return NoValue("no_answer")
    if len(statement) > MAX_STATEMENT_CHARS:
        statement = statement[:MAX_STATEMENT_CHARS]
    if ZH_DOUBT_PATTERN.search(statement):  # one place for every type (the English
        return NoValue("hedged")  # doubt words live with each type's reader)
    return _read_value(statement, spec)


@lru_cache(maxsize=65536)
def _read_value(statement: str, spec: AnswerSpec) -> Value | NoValue:
    """Cached: generate reads an answer and filter or eval judge it again; teachers repeat
    the same short answers across traces."""
    if spec.answer_type == "number":
        number = read_number(statement, spec.given, spec.decimal, expressions=True)
        if isinstance(number, NotANumber):
            return NoValue(number.reason)
        return Value(number_canonical(number, spec.precision), number)
    if spec.answer_type == "choice":
        letter = read_choice(statement, spec.choices)
        return NoValue(letter.reason) if isinstance(letter, NoOption) else Value(letter)
    if spec.answer_type == "yes_no":
        answer = read_yes_no(statement)
        if isinstance(answer, NoOption) and answer.reason == "no_yes_no":
            restated = read_restatement(statement, spec.proposition)
            if restated is not None:
                return Value(restated)
        return NoValue(answer.reason) if isinstance(answer, NoOption) else Value(answer)
    text = normalize_text(statement)
    if not text:
        return NoValue("empty_answer")
    if _TEXT_DOUBT.search(plain(statement)):
        return NoValue("hedged")
    if _PLACEHOLDER.fullmatch(text):
        return NoValue("no_answer")  # "<image 2>": the prompt's placeholder, echoed
    number = read_number(statement, (), spec.decimal) if len(text.split()) <= 3 else None
    return Value(text, number if isinstance(number, Number) else None)


def number_canonical(number: Number, precision: int | None) -> str:
    """'%.10g' of the value, rounded to the item's precision when it states one, so
    '1.732' and '1.73' are one answer of an item graded to two decimals."""
    if precision is not None:
        rounded = round_half_up(number.value, precision)
        if rounded is not None:
            return f"{float(rounded) + 0.0:.10g}"
    return number.canonical()


@lru_cache(maxsize=65536)
def gold_value(answer: str, spec: AnswerSpec) -> Value | NoValue:
    """The gold answer read like any answer (cached: every trace of an item shares it),
    with the datasets' own convention for numbers: a decimal point, whatever the
    language the output was written in ('1.695' is one and a bit, also for French)."""
    if spec.decimal is not None:
        spec = replace(spec, decimal=None)
    return read_value(answer, spec)
