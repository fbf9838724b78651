"""Finding the final answer in a model's output: the last final-answer statement wins.

Statements, whatever their marker: ``<answer>..</answer>``, ``\\boxed{..}``, an
``Answer:`` / ``**Final Answer:**`` label, a "Final Answer" heading with the answer on the
next line(s) (R1's ``**Final Answer**`` then ``\\[ \\boxed{X} \\]``), "the answer is ..." /
"the correct option is ...", and, when the answer type is known, a closing sentence
("So the correct choice is C.", "Thus, **B** is correct.", "No, the ball is not left of
the cube."), a final bold line, or a short first line before an explanation ("B\\n\\nThe
angle ..."). Explicit markers always count; the unmarked kinds count only when they read
as an answer of the asked type.

Thinking: text inside ``<think>..</think>`` (also ``<thinking>``, ``<reasoning>``, and a
lone ``</think>`` whose opening tag was in the prompt) is reasoning; the answer is read
after the last closing tag, and from inside the thinking only when nothing follows it.
An output cut at the token limit (finish reason ``length``), or whose thinking never
closed and holds no answer, is unparseable: truncated, not wrong.

A prompt's declared ``answer_format`` is tried first (its own strict layout: ``Answer:``
on the last line, after ``</think>`` for ``think_tags``, the whole one-line reply for
``direct``); the general reading is the fallback, so a prompt and its parser cannot drift.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace

from distill.core.answers.delimiters import canonical_delimiters
from distill.core.answers.languages import (
    ANSWER_LABELS,
    ANSWER_SENTENCES,
    FEWSHOT_HEADERS,
    alternatives,
    decimal_of,
    language_of,
)
from distill.core.answers.numbers import decimal_evidence
from distill.core.answers.phrases import CJK, CLOSING_CUE, QUESTION_MARKS, ZH_STATEMENT
from distill.core.answers.text import (
    MAX_STATEMENT_CHARS,
    brace_pairs,
    clean_answer,
    normalize_text,
)
from distill.core.answers.values import AnswerSpec, NoValue, read_value
from distill.schemas import Sample

# Longer outputs keep their end: the answer is there.
MAX_TEXT_CHARS = 262_144
# Statements are looked for in the last this-many characters of the answer region.
TAIL_CHARS = 8_000
# A reply of one short line is its answer; before an explanation a first line must be
# shorter still, and no heading ("Step 1:").
BARE_MAX_WORDS = 6
BARE_MAX_CHARS = 60
LEAD_MAX_WORDS = 3
LEAD_MAX_CHARS = 30
LEAD_MAX_CJK = 8  # the same for Chinese, counted in characters
# With the answer type known, a whole one-line reply may be a sentence ("The lowest
# temperature is -5 °C in January."): it counts when it reads as an answer of the type.
SENTENCE_MAX_WORDS = 40
SENTENCE_MAX_CHARS = 300

_TAG_NAMES = ("think", "thinking", "reasoning")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ANSWER_OPEN = re.compile(r"<answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer\s*>", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_SEPARATOR = re.compile(r"[\s$,;]{0,6}(?:(?:and|or|&)[\s$,;]{0,6})?")
_LABEL_WORDS = (r"(?:final\s+answer|correct\s+answer|correct\s+option|correct\s+choice|conclusion|"
                r"short\s+answer|answer)")
# "Answer: X", "**Final Answer:** X", "**Answer**: X", "### Answer: X" (the content may be
# empty: then the answer is on the next line).
_LABEL = re.compile(r"(?<![A-Za-z])" + _LABEL_WORDS + r"(?:\*{1,2}|_{1,2})?[ \t]*[:：]",
                    re.IGNORECASE)
# "Antwort:", "Ответ:", "答え：", "الإجابة:": the other languages' labels (``languages``).
_ML_LABEL = re.compile(r"(?<!\w)(" + alternatives([e.text for e in ANSWER_LABELS])
                       + r")(?:\*{1,2})?[ \t]*[:：]", re.IGNORECASE)
# "La réponse est 18", "答えは18です", "Jibu ni 9": the other languages' answer sentences.
_ML_SENTENCE = re.compile(r"(?<!\w)(" + alternatives([e.text for e in ANSWER_SENTENCES])
                          + r")[ \t]*[:：]?", re.IGNORECASE)
_ML_ASCII_HINT = re.compile(r"\b(?:" + alternatives(sorted(
    {e.text for e in (*ANSWER_LABELS, *ANSWER_SENTENCES) if e.text.isascii()})) + r")\b",
    re.IGNORECASE)
# The next few-shot exemplar's header, on a line of its own ("\n\nQuestion:\n..."): a base
# model running on past its answer (the harness would have stopped there).
_FEWSHOT = re.compile(r"\n[ \t]*(?:" + alternatives([e.text for e in FEWSHOT_HEADERS]) + r")")
# A digit, a separator, a digit: the answer's number depends on the decimal convention.
_SEPARATOR = re.compile(r"\d(?:[.,'’ \u00a0\u2009\u202f]|\{,\}|,\\!)\s?\d")
# "This answer is wrong." after the answer: the model disowns it.
_DISOWNED = re.compile(r"\b(?:this|that|the above) answer is (?:wrong|incorrect|not correct)\b",
                       re.IGNORECASE)
# "The answer is not listed", "none of the options": no option is the answer.
_NOT_LISTED = re.compile(r"\banswer is not (?:listed|among|in the|one of|provided|given)|"
                         r"\bnot (?:listed )?among the (?:options|choices)|"
                         r"\bnone of the (?:options|choices|given options)", re.IGNORECASE)
# JSON or code-fenced replies: {"answer": "C"}, {"choice": "B"}, "final_answer": 12.
_JSON_ANSWER = re.compile(
    r"[\"'](?:final_answer|answer|choice|option|prediction|result)[\"']\s*:\s*"
    r"(?:\"((?:[^\"\\\n]|\\.){0,200})\"|'([^'\n]{0,200})'|(-?\d[\d.,eE+-]{0,30})|(true|false))",
    re.IGNORECASE)
# A markdown table cell naming the answer ('| Answer | 12 |', an 'Answer' column).
_TABLE_ANSWER = re.compile(r"(?:final\s+|correct\s+)?answer", re.IGNORECASE)
# "Answer \[ 9 \]", "Final answer: $$ 12 $$": display math right after an answer label.
_DISPLAY_ANSWER = re.compile(r"(?<![A-Za-z])(?:final\s+answer|answer)(?:\s+is)?\s*[:：]?\s*"
                             r"(?:\\\[|\$\$)(.{1,200}?)(?:\\\]|\$\$)", re.IGNORECASE | re.DOTALL)
_LINE_LEAD = re.compile(r"[ \t>#*_\-]*$")
# A heading alone on its line: "**Final Answer**", "### Final Answer", "Answer".
_HEADING = re.compile(r"^[ \t>#*_]*" + _LABEL_WORDS + r"[ \t*_#]*$", re.IGNORECASE | re.MULTILINE)
# "the answer is X", "the correct option is (B)", "my choice would be C", "I choose B".
_SENTENCE = re.compile(
    r"\b(?<![Tt]his )(?<![Tt]hat )(?:(?:the|my|final|correct|best|right)[ \t]+)*"
    r"(?:answer|option|choice)(?:[ \t]+to[ \t]+(?:the|this)[ \t]+question)?[ \t]+"
    r"(?:is|would[ \t]+be|should[ \t]+be|will[ \t]+be|must[ \t]+be)\b[ \t]*[:：]?"
    r"|\bI(?:[ \t]+would|'ll|[ \t]+will)?[ \t]+(?:choose|pick|select|go[ \t]+with)\b"
    r"|\bI(?:'d|[ \t]+would)[ \t]+say\b",
    re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s+(?=[A-Z*])|\s*$)|[。！？；।]|\n")
_CLOSING_CUE = CLOSING_CUE
# A concluding sentence that rules something out is not the pick ("So option A is
# incorrect"); ", not 6" after a value is an aside the number reader drops.
_NEGATIVE = re.compile(r"\b(?:incorrect|wrong|isn't|aren't|cannot|can't|no longer)\b|"
                       r"(?<!,)[ \t]not\b", re.IGNORECASE)
# Sentences; a '.' closing display math ('... \\geq 2.$$ Therefore') ends one too.
_SENTENCE_SPLIT = re.compile(
    r"(?:[^.!?。！？।\n]|[.!?](?!\$*(?:\s|$)))+(?:[.!?。！？।]+\$*|$|(?=\n))")
_YES_NO_START = re.compile(r"^(?:(?:so|thus|therefore|hence)[, ]+)?(?:yes|no)\b", re.IGNORECASE)
_BOLD_LINE = re.compile(r"^[ \t]*\*\*([^*\n]{1,80})\*\*[ \t.]*$")
_MARKER_WORD = re.compile(r"answer|\\boxed", re.IGNORECASE)
_DISPLAY_OPEN = ("\\[", "$$")
_ZH_SENTENCES = ZH_STATEMENT.finditer
# "Step 1: Observe.", "步骤1", "第一步": a heading, never a reply's first-line answer.
_STEP_HEADING = re.compile(r"(?:step|步骤)\s*\d|第.步", re.IGNORECASE)
# A Chinese line with a comma or full stop inside is a sentence of reasoning, not a lead
# answer (Chinese has no spaces, so the word count cannot tell).
_CJK_SENTENCE = re.compile(r"[，。；：！？]")


@dataclass(frozen=True)
class ParsedOutput:
    """A model's text split into reasoning and final answer.

    ``final_answer``: the answer as stated, cleaned (None when the output has none).
    ``marker``: the kind of statement it came from. ``reason``: 'ok', or why the output
    holds no usable answer (the judge's vocabulary: 'truncated', 'no_answer', 'hedged',
    ...). ``canonical``: its canonical spelling when an answer spec was given."""

    reasoning: str
    final_answer: str | None
    has_think_tags: bool
    tags_balanced: bool
    has_answer_line: bool
    marker: str | None = None
    reason: str = "ok"
    canonical: str | None = None
    # The decimal convention its numbers were read with (the output's own evidence or its
    # language): judging the recorded answer again must read '1,695' the same way.
    decimal: str | None = None


@dataclass(frozen=True)
class _Statement:
    kind: str
    start: int
    end: int
    content: str
    explicit: bool = True  # marked as the answer (counts even when it does not read)
    lang: str | None = None  # the language of its marker, when the marker tells


def parse_output(text: str, spec: AnswerSpec | Sample | None = None, *,
                 answer_format: str | None = None,
                 finish_reason: str | None = None) -> ParsedOutput:
    """Split raw model text into reasoning and final answer (see the module docstring).

    ``spec`` (the item's answer type and options) lets unmarked closing sentences count
    and fills ``canonical``; without it only marked statements and a short bare reply
    are answers."""
    spec = None if spec is None else AnswerSpec.of(spec)
    if len(text) > MAX_TEXT_CHARS:
        text = text[-MAX_TEXT_CHARS:]
    text = _cut_fewshot_runon(canonical_delimiters(text))
    tags = _think_tags(text)
    opens, closes = tags.opens, tags.closes
    has_tags = bool(opens or closes)
    balanced = opens == closes
    think, region, in_think = "", text, False
    if closes:
        before = text[:tags.last_close[0]]
        think = before[tags.first_open[1]:] if tags.first_open else before
        region = text[tags.last_close[1]:]
        if not region.strip():
            region, in_think = think, True
    elif opens:
        region = text[tags.first_open[1]:]  # type: ignore[index]

    def result(statement: _Statement | None, reason: str, canonical: str | None = None,
               answer: str | None = None) -> ParsedOutput:
        reasoning = think if closes else _reasoning_around(region, statement)
        return ParsedOutput(
            reasoning=reasoning.strip().rstrip("*_ \n"), final_answer=answer,
            has_think_tags=has_tags, tags_balanced=balanced,
            has_answer_line=statement is not None and statement.kind == "answer_line",
            marker=None if statement is None else statement.kind + ("_in_think" if in_think
                                                                     else ""),
            reason=reason, canonical=canonical,
            decimal=None if spec is None else spec.decimal)

    if finish_reason == "length":
        return result(None, "truncated")
    if not text.strip():
        return result(None, "empty_output")
    statement = _format_statement(region, answer_format, bool(closes and not in_think))
    if statement is None:
        # Inside unfinished or answerless thinking, a first line is a thought, not a reply.
        unfinished = bool(opens and not closes)
        statement = _last_statement(region, spec, first_line=not (in_think or unfinished),
                                    unmarked=not unfinished)
    if statement is None:
        return result(None, "truncated" if opens and not closes else "no_answer")
    answer = clean_answer(statement.content) or None
    if _DISOWNED.search(region, statement.end, statement.end + 400):
        return result(statement, "hedged", answer=answer)
    if not statement.explicit and _ends_in_loop(region):
        return result(None, "truncated")
    if spec is None:
        return result(statement, "ok" if answer else "empty_answer", answer=answer)
    if spec.answer_type == "choice" and _NOT_LISTED.search(
            region, max(0, statement.start - 300), statement.end + 200) \
            and not any("none" in choice.lower() for choice in spec.choices):
        return result(statement, "not_an_option", answer=answer)
    if spec.answer_type in ("number", "text") and answer and _SEPARATOR.search(answer):
        spec = _with_decimal(spec, region, statement.lang)  # only when a separator is read
    value = read_value(answer, spec)
    if isinstance(value, NoValue):
        return result(statement, value.reason, answer=answer)
    if statement.kind == "closing" and spec.answer_type in ("choice", "yes_no"):
        answer = value.canonical  # "Thus, B is correct." is recorded as the pick, "B"
    return result(statement, "ok", value.canonical, answer)


@dataclass(frozen=True)
class _ThinkTags:
    opens: int
    closes: int
    first_open: tuple[int, int] | None  # (start, end) of the first opening tag
    last_close: tuple[int, int]  # (start, end) of the last closing tag; (0, 0) if none


def _think_tags(text: str) -> _ThinkTags:
    """Thinking tags found by plain string search (C speed on any length, unlike a regex
    that builds one match object per tag)."""
    if "<" not in text:
        return _ThinkTags(0, 0, None, (0, 0))
    lowered = text.translate(_ASCII_LOWER)  # str.lower() may change the length
    opens = closes = 0
    first_open: tuple[int, int] | None = None
    last_close = (-1, -1)
    for name in _TAG_NAMES:
        open_tag, close_tag = f"<{name}>", f"</{name}>"
        opens += lowered.count(open_tag)
        closes += lowered.count(close_tag)
        found = lowered.find(open_tag)
        if found != -1 and (first_open is None or found < first_open[0]):
            first_open = (found, found + len(open_tag))
        found = lowered.rfind(close_tag)
        if found > last_close[0]:
            last_close = (found, found + len(close_tag))
    return _ThinkTags(opens, closes, first_open, last_close if closes else (0, 0))


def _reasoning_around(region: str, statement: _Statement | None) -> str:
    if statement is None:
        return region
    if statement.kind == "first_line":
        return region[statement.end:]
    return region[:statement.start]


# --- the prompt's own layout ---------------------------------------------------------------


def _format_statement(region: str, answer_format: str | None,
                      closed_think: bool) -> _Statement | None:
    """The answer where the prompt asked for it, or None when the output did not follow
    the prompt's layout (then the general reading decides)."""
    if answer_format not in ("answer_line", "think_tags", "direct"):
        return None
    if answer_format == "think_tags" and not closed_think:
        return None
    stripped = region.rstrip()
    line_start = stripped.rfind("\n") + 1
    last_line = stripped[line_start:]
    if answer_format == "direct" and line_start:
        return None
    label = _LABEL.search(last_line)
    if label is not None and _LINE_LEAD.fullmatch(last_line[:label.start()]) is not None:
        content = _first_sentence(last_line[label.end():].strip(" \t*_"))
        if content and "\\boxed" not in content:
            return _Statement("answer_line", line_start, len(stripped), content)
        return None
    if answer_format == "direct" and 0 < len(last_line) <= BARE_MAX_CHARS \
            and not _MARKER_WORD.search(last_line):
        line = last_line.strip()
        return _Statement("first_line", 0, len(stripped), _first_sentence(line) or line)
    return None


# --- the general reading -------------------------------------------------------------------


def _last_statement(region: str, spec: AnswerSpec | None, first_line: bool = True,
                    unmarked: bool = True) -> _Statement | None:
    """``_find_statement`` with its position in ``region``'s coordinates (statements are
    found in the region's tail; the checks after the answer look at the region itself)."""
    offset = max(0, len(region) - TAIL_CHARS)
    statement = _find_statement(region, spec, first_line, unmarked)
    if statement is None or not offset or statement.kind == "first_line":
        return statement
    return replace(statement, start=statement.start + offset, end=statement.end + offset)


def _find_statement(region: str, spec: AnswerSpec | None, first_line: bool,
                    unmarked: bool) -> _Statement | None:
    """The last statement of the region: explicit ones always, unmarked ones only when
    they read as an answer of the asked type; failing all, the region's last sentence or
    line when it reads as one (structure first: a reply ends with its answer, whatever
    its phrasing). Inside thinking that never closed only marked statements count: a
    thought is not a reply."""
    offset = max(0, len(region) - TAIL_CHARS)
    tail = region[offset:]
    if _cut_mid_expression(tail):
        # "... = ": cut at the token limit; its last words are no reply, and a one-line
        # reply cut so is no first-line answer either.
        unmarked = False
        first_line = first_line and "\n" in region.strip()
    found = [*_answer_tags(tail), *_boxes(tail), *_labels(tail), *_headings(tail),
             *_sentences(tail), *_ml_statements(tail), *_json_answers(tail),
             *_display_answers(tail), *_table_answers(tail)]
    if spec is not None and unmarked:
        found.extend(_closing(tail))
        if spec.answer_type in ("number", "choice", "yes_no"):
            found.extend(_final_short_line(tail))
    if first_line:
        found.extend(_first_line(region, sentence=spec is not None))
        if spec is not None and spec.answer_type == "choice":
            found.extend(_first_sentence_option(region, spec))
    found.sort(key=lambda s: (s.start + (offset if s.kind != "first_line" else 0), s.explicit))
    if spec is None:
        return next((s for s in reversed(found) if s.explicit or s.kind == "first_line"),
                    None)
    for statement in reversed(found):
        if statement.explicit:
            return statement
        if not isinstance(read_value(clean_answer(statement.content), spec), NoValue):
            # A reply that ends in avowed doubt has no answer, whatever an unmarked
            # statement before the end said ("40 = 8 x 5 ... maybe 40 or 26, not sure").
            ending = _last_sentences(tail) if unmarked else []
            return _hedge_after(statement, ending, spec) or statement
    for statement in _last_sentences(tail) if unmarked else []:
        if not isinstance(read_value(clean_answer(statement.content), spec), NoValue):
            return statement
    return None


def _hedge_after(statement: _Statement, ending: list[_Statement],
                 spec: AnswerSpec) -> _Statement | None:
    """The reply's last sentence when it hedges and comes after ``statement``."""
    for last in ending:
        if last.start >= statement.end:
            value = read_value(clean_answer(last.content), spec)
            if isinstance(value, NoValue) and value.reason == "hedged":
                return last
    return None


def _cut_fewshot_runon(text: str) -> str:
    """``text`` up to the next few-shot exemplar's header when an answer precedes it: a
    base model that answered and ran on into "Question: ..." (with an answer of its own)
    is read by its answer to this item, as the harness's stop sequence would have cut it."""
    if "\n" not in text:
        return text
    for match in _FEWSHOT.finditer(text):
        before = text[:match.start()]
        if before.strip() and _has_marked_answer(before[-TAIL_CHARS:]):
            return before
    return text


def _has_marked_answer(text: str) -> bool:
    return bool(_SENTENCE.search(text) or _LABEL.search(text) or _BOX.search(text)
                or _ML_SENTENCE.search(text) or _ML_LABEL.search(text) or ZH_STATEMENT.search(text))


def _with_decimal(spec: AnswerSpec, region: str, lang: str | None = None) -> AnswerSpec:
    """The spec with the output's decimal convention: its own evidence first (a '1,25'
    elsewhere in it), else the item's language, else the language of its answer phrase."""
    evidence = decimal_evidence(region[-TAIL_CHARS:])
    if evidence is None and spec.decimal is not None:
        return spec
    decimal = evidence or decimal_of(spec.language or lang)
    return spec if decimal == spec.decimal else replace(spec, decimal=decimal)


def _ends_in_loop(text: str) -> bool:
    """Whether the text ends in the same chunk three times over (a degenerate run cut at
    the token limit): then an unmarked last sentence is no answer."""
    tail = text.rstrip()[-600:]
    for period in range(4, 161):
        if 3 * period > len(tail):
            break
        chunk = tail[-period:]
        if tail[-3 * period:] == chunk * 3:
            return True
    return False


def _cut_mid_expression(text: str) -> bool:
    """Whether the text stops inside a computation ('... = ', an open '$' or brace)."""
    stripped = text.rstrip()
    if not stripped:
        return False
    line = stripped[stripped.rfind("\n") + 1:]
    return stripped[-1] in "=+-/×(,\\{^" or line.count("{") > line.count("}")


def _first_sentence_option(region: str, spec: AnswerSpec) -> list[_Statement]:
    """A reply that opens with an option's own text as its first sentence ("Wages will
    fall. When the economy ..."): that option, unmarked, counted when nothing marks one."""
    stripped = region.lstrip()
    start = len(region) - len(stripped)
    match = _SENTENCE_SPLIT.match(stripped)
    if match is None or "\n" in match.group(0):
        return []
    sentence = match.group(0).strip(" \t*_")
    options = {normalize_text(choice) for choice in spec.choices}
    if normalize_text(sentence) in options - {""}:
        return [_Statement("first_line", start, start + match.end(), sentence, explicit=False)]
    return []


def _ml_statements(text: str) -> list[_Statement]:
    """Answer labels and sentences of the other languages (``languages``). An ASCII text
    with none of their ASCII words is skipped at the cost of one search (most outputs)."""
    if text.isascii() and not _ML_ASCII_HINT.search(text):
        return []
    out = []
    for pattern, kind in ((_ML_LABEL, "answer_label"), (_ML_SENTENCE, "answer_is")):
        for match in pattern.finditer(text):
            line_end = text.find("\n", match.end())
            line_end = len(text) if line_end == -1 else line_end
            content = _first_sentence(text[match.end():line_end].strip(" \t*_-–—"))
            end = line_end
            if not content and kind == "answer_label":
                content, end = _next_block(text, line_end)
            if content:
                entries = ANSWER_LABELS if kind == "answer_label" else ANSWER_SENTENCES
                out.append(_Statement(kind, match.start(), end, content,
                                      lang=language_of(match.group(1), entries)))
    return out


def _json_answers(text: str) -> list[_Statement]:
    """``{"answer": "C"}`` and the like, in a JSON or code-fenced reply."""
    if '"' not in text and "'" not in text:
        return []
    out = []
    for match in _JSON_ANSWER.finditer(text):
        content = next(group for group in match.groups() if group is not None)
        out.append(_Statement("json", match.start(), match.end(), content))
    return out


def _table_answers(text: str) -> list[_Statement]:
    """A markdown table's answer: a row '| Answer | 12 |', or the last row's cell under an
    'Answer' / 'Final answer' column."""
    if "|" not in text:
        return []
    out = []
    offset = 0
    column: int | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        cells = [cell.strip(" *_") for cell in stripped.strip("|").split("|")]
        if stripped.startswith("|") and len(cells) >= 2:
            names = [_TABLE_ANSWER.fullmatch(cell) is not None for cell in cells]
            if names[0] and _table_value(cells[1]):
                out.append(_Statement("answer_line", offset, offset + len(line), cells[1]))
            elif any(names):
                column = names.index(True)
            elif column is not None and column < len(cells) and _table_value(cells[column]):
                out.append(_Statement("answer_line", offset, offset + len(line), cells[column]))
        else:
            column = None
        offset += len(line) + 1
    return out


def _table_value(cell: str) -> bool:
    return bool(cell) and not set(cell) <= set("-: ")


def _display_answers(text: str) -> list[_Statement]:
    """``Answer \\[ 9 \\]``: a display-math answer after an answer label."""
    if "\\[" not in text and "$$" not in text:
        return []
    return [_Statement("answer_line", m.start(), m.end(), m.group(1).strip())
            for m in _DISPLAY_ANSWER.finditer(text)]


def _answer_tags(text: str) -> list[_Statement]:
    out = []
    for match in _ANSWER_OPEN.finditer(text):
        close = _ANSWER_CLOSE.search(text, match.end())
        end = close.start() if close else len(text)
        if close is None and out:
            break
        out.append(_Statement("answer_tag", match.start(), end,
                              text[match.end():end][:MAX_STATEMENT_CHARS]))
    return out


def _boxes(text: str) -> list[_Statement]:
    """``\\boxed{..}`` contents; boxes joined only by a separator form one statement
    ('\\boxed{3} and \\boxed{5}' names two answers, '\\boxed{3} or \\boxed{5}' hedges)."""
    out: list[_Statement] = []
    pairs: dict[int, int] | None = None
    for match in _BOX.finditer(text):
        if pairs is None:
            pairs = brace_pairs(text)
        end = pairs.get(match.end() - 1)
        if end is None:
            continue
        content = text[match.end():end][:MAX_STATEMENT_CHARS]
        previous = out[-1] if out else None
        between = text[previous.end:match.start()] if previous is not None else ""
        if previous is not None and _BOX_SEPARATOR.fullmatch(between):
            if content.strip() != previous.content.strip():
                content = f"{previous.content} {between.strip(' $')} {content}"
            out[-1] = _Statement("boxed", previous.start, end + 1, content)
        else:
            out.append(_Statement("boxed", match.start(), end + 1, content))
    return out


def _labels(text: str) -> list[_Statement]:
    out = []
    for match in _LABEL.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        at_line_start = _LINE_LEAD.fullmatch(text[line_start:match.start()]) is not None
        line_end = text.find("\n", match.end())
        line_end = len(text) if line_end == -1 else line_end
        content = _first_sentence(text[match.end():line_end].strip(" \t*_"))
        end = line_end
        if not content:
            content, end = _next_block(text, line_end)
        kind = "answer_line" if at_line_start else "answer_label"
        out.append(_Statement(kind, match.start(), end, content))
    return out


def _headings(text: str) -> list[_Statement]:
    out = []
    for match in _HEADING.finditer(text):
        content, end = _next_block(text, match.end())
        if content:
            out.append(_Statement("answer_line", match.start(), end, content))
    return out


def _sentences(text: str) -> list[_Statement]:
    out = []
    matches = [*_SENTENCE.finditer(text), *_ZH_SENTENCES(text)]
    for match in matches:
        line_end = text.find("\n", match.end())
        line_end = len(text) if line_end == -1 else line_end
        content = _first_sentence(text[match.end():line_end].strip(" \t*_"))
        if content:
            out.append(_Statement("answer_is", match.start(), line_end, content))
    return out


def _closing(text: str) -> list[_Statement]:
    """The last sentence of the last paragraph when it concludes ('So ...', 'Thus ...',
    'Yes, ...'), and a final bold-only line: unmarked answers, counted when they read."""
    stripped = text.rstrip()
    paragraph_start = stripped.rfind("\n\n") + 1
    last_line_start = stripped.rfind("\n") + 1
    out = []
    bold = _BOLD_LINE.match(stripped[last_line_start:])
    if bold:
        out.append(_Statement("bold_line", last_line_start, len(stripped), bold.group(1),
                              explicit=False))
    paragraph = stripped[paragraph_start:]
    sentences = list(_SENTENCE_SPLIT.finditer(paragraph[-600:]))
    base = paragraph_start + max(0, len(paragraph) - 600)
    for match in reversed(sentences[-3:]):
        lead = match.group(0).strip(" \t*_")
        if not _CLOSING_CUE.match(lead) or lead.endswith(tuple(QUESTION_MARKS)):
            continue
        if _NEGATIVE.search(lead) and not _YES_NO_START.match(lead):
            continue
        out.append(_Statement("closing", base + match.start(), base + match.end(), lead,
                              explicit=False))
        break
    return out


def _last_sentences(text: str) -> list[_Statement]:
    """The last line of the text, then its last sentence, with no cue word ('There are 5
    birds in the picture.', 'B) Vitamin C', '图中一共有6只鸭子。'): the fallback reading.
    A question ('57?') states nothing."""
    stripped = text.rstrip(" \t\n*_")
    line_start = stripped.rfind("\n") + 1
    out = []
    line = stripped[line_start:].strip(" \t*_#>")
    if line and len(line) <= SENTENCE_MAX_CHARS and not line.endswith(tuple(QUESTION_MARKS)):
        out.append(_Statement("last_line", line_start, len(stripped), line, explicit=False))
    sentences = list(_SENTENCE_SPLIT.finditer(stripped[-SENTENCE_MAX_CHARS:]))
    if sentences:
        last = sentences[-1]
        lead = last.group(0).strip(" \t*_")
        base = max(0, len(stripped) - SENTENCE_MAX_CHARS)
        if lead and lead != line and not lead.endswith(tuple(QUESTION_MARKS)) \
                and not _NEGATIVE.search(lead):
            out.append(_Statement("last_sentence", base + last.start(), base + last.end(),
                                  lead, explicit=False))
    return out


def _final_short_line(text: str) -> list[_Statement]:
    """A bare short last line after the reasoning ("... recount: 12 apples.\\n\\n12", "\\n\\nB"):
    the reply's closing short answer, which outranks an earlier conclusion when it reads as
    the asked type. Headings, questions and lines ending in ':' are no answer."""
    stripped = text.rstrip()
    start = stripped.rfind("\n") + 1
    if not start or not stripped[:start].strip():
        return []  # a one-line reply: the first-line rules read it
    line = stripped[start:].strip(" \t*_#>")
    if not line or len(line) > BARE_MAX_CHARS or len(line.split()) > LEAD_MAX_WORDS \
            or line.endswith((":", "：", *QUESTION_MARKS)) or _STEP_HEADING.match(line) \
            or _MARKER_WORD.search(line):
        return []
    return [_Statement("last_line", start, len(stripped), line, explicit=False)]


def _first_line(region: str, sentence: bool = False) -> list[_Statement]:
    """A short first line before an explanation ('B', 'Yes.', '12 cm'), or the whole of a
    one-line reply (a sentence too, when ``sentence``): the direct answers of models that
    answer first and explain afterwards, or not at all."""
    stripped = region.lstrip()
    start = len(region) - len(stripped)
    line_end = stripped.find("\n")
    line = stripped if line_end == -1 else stripped[:line_end]
    line = line.strip()
    alone = line_end == -1 or not stripped[line_end:].strip()
    if alone:
        max_chars, max_words = ((SENTENCE_MAX_CHARS, SENTENCE_MAX_WORDS) if sentence
                                else (BARE_MAX_CHARS, BARE_MAX_WORDS))
    else:
        max_chars, max_words = LEAD_MAX_CHARS, LEAD_MAX_WORDS
    if not line or len(line) > max_chars or len(line.split()) > max_words \
            or _MARKER_WORD.search(line) or _STEP_HEADING.match(line) or line.startswith("#") \
            or (not alone and (line.endswith(":") or _CJK_SENTENCE.search(line[:-1])
                               or len(CJK.findall(line)) > LEAD_MAX_CJK)):
        return []
    if alone and sentence:  # "The umbrella is yellow. The canopy is ...": its first sentence
        line = _first_sentence(line) or line
    return [_Statement("first_line", start, start + len(line), line, explicit=False)]


def _first_sentence(content: str) -> str:
    """A statement's content up to the end of its sentence ('5. This is because' -> '5')."""
    content = content[:MAX_STATEMENT_CHARS]
    end = _SENTENCE_END.search(content)
    if end and end.start() and content[end.start()] in QUESTION_MARKS:
        return ""  # "the answer is 57?": a tentative thought, not a statement
    return (content[:end.start()] if end and end.start() else content).strip()


def _next_block(text: str, position: int) -> tuple[str, int]:
    """The first non-blank line after ``position``, or a whole ``\\[ .. \\]`` / ``$$ .. $$``
    display that starts there."""
    index = position
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    if index >= len(text):
        return "", position
    line_end = text.find("\n", index)
    line_end = len(text) if line_end == -1 else line_end
    line = text[index:line_end].strip()
    if line in _DISPLAY_OPEN:
        closer = "\\]" if line == "\\[" else "$$"
        close = text.find(closer, line_end, line_end + MAX_STATEMENT_CHARS)
        if close != -1:
            return text[line_end:close].strip(), close + len(closer)
    return line[:MAX_STATEMENT_CHARS], line_end
