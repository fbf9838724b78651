"""Reading answers out of model text, and judging them against the gold answer.

One module for the three stages that need it: generate (split a teacher's raw text into
reasoning + final answer), filter (is the teacher right?) and eval (is the student
right?). Every judgment is ``correct``, ``wrong`` or ``unparseable``: a model that did not
give an answer of the asked type is a different failure from a wrong answer.
"""

from __future__ import annotations

import logging
import math
import re
import string
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from distill.schemas import Sample
from distill.schemas.sample import CHOICE_LETTERS

Correctness = Literal["correct", "wrong", "unparseable"]

_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)
_ANSWER_LINE = re.compile(
    r"^[ \t>*#_-]*(?:\*\*|__)?(?:final\s+answer|answer)(?:\*\*|__)?\s*(?:is)?\s*[:：]"
    r"\s*(?:\*\*|__)?(?P<answer>.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_IS = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s+is\s*[:：]?\s*(?P<answer>[^\n]+?)\s*(?:[.!]\s*)?$",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_MARK = re.compile(
    r"(?:final\s+answer|answer)(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?(?P<answer>[^\n]+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
# "### Final Answer" / "**Answer**" alone on a line, the answer on the next non-blank line.
_ANSWER_HEADING = re.compile(
    r"^[ \t>*#_-]*(?:\*\*|__)?(?:final\s+answer|answer)(?:\*\*|__)?[ \t]*[:：]?[ \t]*"
    r"(?:\*\*|__)?[ \t]*\n\s*(?P<answer>[^\n]+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_BOXED = re.compile(r"\\boxed\s*\{")
_MARKER_WORD = re.compile(r"answer|\\boxed", re.IGNORECASE)
_NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+−]?\.\d+")
_LATEX_HINT = re.compile(r"\\(?:frac|dfrac|tfrac|sqrt|pi|cdot|times)|\^")
_CHOICE_PATTERNS = [
    re.compile(r"^\(?([A-Z])\)?(?:[.:)\s]|$)"),  # "B", "(B)", "B.", "B) text", "B: text"
    re.compile(r"\b(?:option|choice|letter)\s*\(?([A-Z])\)?\b", re.IGNORECASE),
    re.compile(r"^\**\(?([A-Z])\)?\**$"),  # "**B**"
    re.compile(r"^\(?([a-z])\)?$"),  # a lone lowercase letter
]
_LONE_LETTER = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")
# A reply without any answer marker counts as the answer only when it is this short.
BARE_ANSWER_MAX_WORDS = 6
BARE_ANSWER_MAX_CHARS = 60
_NUMBER_WORDS = {
    word: index for index, word in enumerate([
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen", "twenty",
    ])
}
_YES = {"yes", "y", "true", "correct"}
_NO = {"no", "n", "false", "incorrect"}
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class ParsedOutput:
    """A model's text split into its reasoning and its final answer (None if none found)."""

    reasoning: str
    final_answer: str | None
    has_think_tags: bool
    tags_balanced: bool
    has_answer_line: bool


def parse_output(text: str) -> ParsedOutput:
    """Split raw model text into reasoning and final answer.

    Tolerates ``<think>...</think>`` (also with the opening tag missing, as some chat
    templates emit it in the prompt), text before the tags, markdown around
    ``Answer:``, ``\\boxed{}`` and "the answer is ...". The *last* answer marker wins:
    models restate their answer at the end.
    """
    opens, closes = len(_THINK_OPEN.findall(text)), len(_THINK_CLOSE.findall(text))
    has_tags = bool(opens or closes)
    balanced = opens == closes
    reasoning_part, answer_part = text, text
    closes_found = list(_THINK_CLOSE.finditer(text))
    last_close = closes_found[-1] if closes_found else None
    if last_close is not None:
        before = text[: last_close.start()]
        first_open = _THINK_OPEN.search(before)
        reasoning_part = before[first_open.end():] if first_open else before
        answer_part = text[last_close.end():]
    answer, span, from_line = _find_answer(answer_part)
    if last_close is None:
        reasoning_part = answer_part[: span[0]] if span else answer_part
        reasoning_part = _THINK_OPEN.sub("", reasoning_part)
    return ParsedOutput(
        reasoning=reasoning_part.strip().rstrip("*_ \n"),
        final_answer=answer,
        has_think_tags=has_tags,
        tags_balanced=balanced,
        has_answer_line=from_line,
    )


def _find_answer(text: str) -> tuple[str | None, tuple[int, int] | None, bool]:
    """(answer, its span in text, whether it came from an 'Answer:' line)."""
    lines = list(_ANSWER_LINE.finditer(text))
    if lines:
        match = lines[-1]
        answer = clean_answer(match.group("answer"))
        if answer:
            return answer, match.span(), True
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        answer = clean_answer(marks[-1].group("answer"))
        if answer:
            return answer, marks[-1].span(), False
    headings = list(_ANSWER_HEADING.finditer(text))
    if headings:
        answer = clean_answer(headings[-1].group("answer"))
        if answer:
            return answer, headings[-1].span(), True
    boxed = _last_boxed(text)
    if boxed is not None:
        content, span = boxed
        answer = clean_answer(content)
        if answer:
            return answer, span, False
    sentences = list(_ANSWER_IS.finditer(text))
    if sentences:
        answer = clean_answer(sentences[-1].group("answer"))
        if answer:
            return answer, sentences[-1].span(), False
    return _bare_answer(text)


def _bare_answer(text: str) -> tuple[str | None, tuple[int, int] | None, bool]:
    """A direct-mode reply is often the answer alone ("8", "B", "yes"): a single short
    line with no marker is taken as the answer. Longer unmarked text is not an answer."""
    stripped = text.strip()
    if (not stripped or "\n" in stripped or len(stripped) > BARE_ANSWER_MAX_CHARS
            or len(stripped.split()) > BARE_ANSWER_MAX_WORDS
            or _MARKER_WORD.search(stripped)):  # an empty "Answer:" or a torn "\boxed{"
        return None, None, False
    answer = clean_answer(stripped)
    if not answer:
        return None, None, False
    start = text.index(stripped)
    return answer, (start, start + len(stripped)), False


def _last_boxed(text: str) -> tuple[str, tuple[int, int]] | None:
    """Content of the last ``\\boxed{...}``, braces balanced."""
    found = None
    for match in _BOXED.finditer(text):
        depth, index = 1, match.end()
        while index < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if depth == 0:
            found = (text[match.end(): index - 1], (match.start(), index))
    return found


def clean_answer(answer: str) -> str:
    """Strip the decoration models put around an answer: markdown, $, boxed, quotes, '.'."""
    value = answer.strip()
    for _ in range(3):
        boxed = _last_boxed(value)
        if boxed is not None and boxed[1] == (0, len(value)):
            value = boxed[0].strip()
        value = value.strip("*_`\"' ").strip()
        if len(value) >= 2 and value[0] == value[-1] == "$":
            value = value[1:-1].strip()
        value = value.rstrip(".。!").strip()
    return value


# --- judging -------------------------------------------------------------------------------


def judge(predicted: str | None, sample: Sample) -> Correctness:
    """Compare an extracted answer with the sample's gold answer, by answer type."""
    if predicted is None or not predicted.strip():
        return "unparseable"
    if sample.answer_type == "number":
        return _judge_number(predicted, sample.answer)
    if sample.answer_type == "choice":
        letter = choice_letter(predicted, sample.choices or [])
        if letter is None:
            return "unparseable"
        return "correct" if letter == sample.answer else "wrong"
    if sample.answer_type == "yes_no":
        value = yes_no(predicted)
        if value is None:
            return "unparseable"
        return "correct" if value == sample.answer else "wrong"
    return "correct" if normalize_text(predicted) == normalize_text(sample.answer) else "wrong"


def canonical_answer(predicted: str | None, sample: Sample) -> str | None:
    """One spelling per meaning, so answers can be counted and compared (agreement, votes).

    '15', '15.0' and '15 apples' -> '15'; '(B)' and the option's text -> 'B'; 'Yes.' ->
    'yes'; text -> ``normalize_text``. None when no answer of the asked type is there.
    LaTeX-ish numbers keep their cleaned text: math-verify judges them, it does not
    print a canonical form.
    """
    if predicted is None or not predicted.strip():
        return None
    if sample.answer_type == "number":
        if _LATEX_HINT.search(predicted):
            return clean_answer(predicted).replace(" ", "")
        value = parse_number(predicted)
        return None if value is None else f"{value + 0.0:.10g}"  # + 0.0: no '-0'
    if sample.answer_type == "choice":
        return choice_letter(predicted, sample.choices or [])
    if sample.answer_type == "yes_no":
        return yes_no(predicted)
    return normalize_text(predicted) or None


def same_answer(a: str | None, b: str | None, sample: Sample) -> bool:
    """Do two extracted answers to ``sample`` say the same thing (by its answer type)?

    Independent of gold: used to count teachers' answers as agreeing (consensus labels)
    and to compare a derived label with a withheld gold. Every such decision goes through
    here, so a better judge can replace this one function.
    """
    canonical = canonical_answer(a, sample)
    return canonical is not None and canonical == canonical_answer(b, sample)


def _judge_number(predicted: str, gold: str) -> Correctness:
    if _LATEX_HINT.search(predicted) or _LATEX_HINT.search(gold):
        return _math_verify(gold, predicted)
    gold_value = parse_number(gold)
    value = parse_number(predicted)
    if value is None:
        return "unparseable"
    if gold_value is None:
        return _math_verify(gold, predicted)
    return "correct" if numbers_equal(value, gold_value) else "wrong"


def parse_number(text: str) -> float | None:
    """The number a short answer states: '15', '-3.5', '1,200', '3/4', '15 apples', '45%'.

    Only the first number counts; an answer with no digits is a number only when it is
    one number word ('three', up to 'twenty'), as small models often spell them out.
    """
    match = _NUMBER.search(text.replace("−", "-"))
    if match is None:
        words = normalize_text(text).split()
        if len(words) == 1 and words[0] in _NUMBER_WORDS:
            return float(_NUMBER_WORDS[words[0]])
        return None
    token = match.group(0).replace(",", "").replace(" ", "").replace("−", "-")
    try:
        if "/" in token:
            return float(Fraction(token))
        return float(token)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def choice_letter(predicted: str, choices: list[str]) -> str | None:
    """The option a model picked: a letter in several styles, or the option's own text."""
    letters = CHOICE_LETTERS[: len(choices)]
    text = predicted.strip()
    named = {letter for letter in _LONE_LETTER.findall(text) if letter in letters}
    normalized = normalize_text(text)
    for index, choice in enumerate(choices):
        if normalize_text(choice) == normalized:
            return letters[index]
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).upper() in letters:
            letter = match.group(1).upper()
            # "A or B" names two options: that is no answer, not the first one.
            return letter if named <= {letter} else None
    if len(named) == 1 and len(text.split()) <= 4:
        return named.pop()
    return None


def yes_no(predicted: str) -> str | None:
    """'yes'/'no' from a reply that starts with it ("No, it is not true") or names exactly
    one of the two words ("The sum is 9, so no"); "yes and no" is no answer."""
    words = normalize_text(predicted).split()
    if not words:
        return None
    named = {word for word in words if word in ("yes", "no")}
    first = "yes" if words[0] in _YES else "no" if words[0] in _NO else None
    if first is not None:
        return first if named <= {first} else None
    return named.pop() if len(named) == 1 else None


def normalize_text(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces: for short text answers."""
    table = str.maketrans("", "", string.punctuation)
    words = text.lower().translate(table).split()
    return " ".join(word for word in words if word not in _ARTICLES)


# --- math-verify, safely ---------------------------------------------------------------------

MATH_VERIFY_TIMEOUT_S = 5.0
_pool: ThreadPoolExecutor | None = None


def _math_verify(gold: str, predicted: str) -> Correctness:
    """Symbolic comparison for LaTeX-ish answers (\\frac{1}{2} vs 0.5).

    math-verify's own timeouts use ``signal.alarm``, which only works on the main
    thread; we disable them and bound the call with a worker thread instead, so scorers
    can run anywhere (threads, Ray workers).
    """
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="math-verify")
    future = _pool.submit(_math_verify_call, gold, predicted)
    try:
        return future.result(timeout=MATH_VERIFY_TIMEOUT_S)
    except FutureTimeout:
        return "unparseable"


def _math_verify_call(gold: str, predicted: str) -> Correctness:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        gold_parsed = parse(gold, parsing_timeout=None)
        pred_parsed = parse(predicted, parsing_timeout=None)
    except Exception:  # noqa: BLE001 - any parser failure means "not a math answer"
        return "unparseable"
    if not pred_parsed:
        return "unparseable"
    try:
        return "correct" if verify(gold_parsed, pred_parsed, timeout_seconds=None) else "wrong"
    except Exception:  # noqa: BLE001
        return "unparseable"
