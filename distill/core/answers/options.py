"""Multiple-choice and yes/no answers as models phrase them.

A choice is a letter in any of the usual phrasings ("B", "(B)", "B.", "**B**", "B: text",
"option B", "the correct choice is C", "B is correct") or the option's own text ("45°",
"the cube"), also given as a number matching a numeric option. Option texts are blanked,
longest first, before letters are looked for, so a capital inside one ("(B) Vitamin C",
"(B) 1 A") is no second letter. Two different options named ("A or B", "A and C") are no
answer. A yes/no answer is a reply whose first word is yes/no ("Yes, ..., although no
cars ..." is yes; "是的，..." / "不是，..." in Chinese) or that names exactly one of the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distill.core.answers.languages import NO_WORDS, OPTION_LETTERS, YES_WORDS
from distill.core.answers.numbers import Number, numbers_match, read_number
from distill.core.answers.phrases import ZH_LEAD, ZH_YES_NO
from distill.core.answers.text import normalize_text, plain
from distill.schemas.sample import CHOICE_LETTERS


@dataclass(frozen=True)
class NoOption:
    reason: str  # "empty_answer" | "hedged" | "multiple_answers" | "not_an_option" | "no_yes_no"


_HEDGE = re.compile(r"\b(?:or|either|maybe|perhaps|possibly|between)\b", re.IGNORECASE)
_DOUBT = re.compile(r"\b(?:cannot|can ?not|can't|unable to) (?:be )?(?:determine|tell|say|"
                    r"answer|see)|\bnot (?:sure|certain)\b|\bunclear\b", re.IGNORECASE)
# "not (A)", "rather than option C": an option ruled out is not the one picked.
_NEGATED = re.compile(r"\b(?:not|rather than|instead of|except|unlike)\s+(?:options?\s+|"
                      r"choices?\s+)?\(?[A-Z]\)?(?![A-Za-z])")
_START = re.compile(r"\s*([(\[])?\s*([A-Za-z])\s*([)\].:,])?(?=\s|$)")
_BOLD = re.compile(r"\*\*\s*\(?([A-Z])\)?\s*[.:)]?\s*\*\*|\*\*\(?([A-Z])[.:)]")
_PARENS = re.compile(r"\(([A-Z])\)")
_KEYWORD = re.compile(
    r"(?i:\b(?:option|choice|letter|answer|choose|select|pick|go with))(?:\s+is)?\s*[:(]?\s*"
    r"\(?([A-Z])\)?(?![A-Za-z'])")
_IS_CORRECT = re.compile(r"(?<![A-Za-z'])\(?([A-Z])\)?\s+(?:is|seems|appears)\s+(?:to be\s+)?"
                         r"(?:the\s+)?(?:correct|right|best|answer)")
_LONE = re.compile(r"(?<![A-Za-z'’])([A-Z])(?![A-Za-z'’])")
_ARTICLE_LIKE = {"A", "I"}
_YES_OR_NO = re.compile(r"\b(?:yes|no)\s*(?:or|/)\s*(?:yes|no)\b", re.IGNORECASE)
_REVERSAL = re.compile(r"[.!?;:]\s*(?:yes|no)\b|\b(?:yes|no)\s*$", re.IGNORECASE)
_YES = {"yes", "true", "correct"}
_NO = {"no", "false", "incorrect"}
_YES_NO_DOUBT = re.compile(r"\b(?:maybe|perhaps|unclear|uncertain|not sure|cannot (?:be )?"
                           r"determine|can't (?:be )?determine|cannot tell|can't tell|"
                           r"impossible to (?:tell|say|determine))\b", re.IGNORECASE)


# An option letter of another script standing alone ('Б', 'د', 'Γ)'), by position; only in
# a short statement ('Б', '(В) 45°'): in a sentence 'В' is the Russian 'in'.
FOREIGN_LETTER_MAX_WORDS = 2
_FOREIGN = {foreign: latin for foreign, latin, _ in OPTION_LETTERS}
_FOREIGN_LETTER = re.compile(r"(?<![^\W\d_])([" + "".join(_FOREIGN) + r"])(?![^\W\d_])")
_YES_WORDS = frozenset(entry.text.casefold() for entry in YES_WORDS)
_NO_WORDS = frozenset(entry.text.casefold() for entry in NO_WORDS)
_FIRST_WORD = re.compile(r"[^\W\d_]+(?:\s+[^\W\d_]+)?")


def read_choice(statement: str, choices: list[str] | tuple[str, ...]) -> str | NoOption:
    """The letter of the one option a statement picks."""
    letters = CHOICE_LETTERS[: len(choices)]
    raw = statement.strip()
    if len(raw.split()) <= FOREIGN_LETTER_MAX_WORDS and _FOREIGN_LETTER.search(raw):
        raw = _FOREIGN_LETTER.sub(lambda m: _FOREIGN[m.group(1)], raw)
    text = plain(raw)
    if not text:
        return NoOption("empty_answer")
    normalized = normalize_text(text)
    for index, choice in enumerate(choices):
        if normalized and normalize_text(choice) == normalized:
            return letters[index]
    named = _letters_named(_mask_options(raw, choices), _mask_options(text, choices), choices)
    if len(named) > 1 and named & set(letters):
        named &= set(letters)  # "(F) 0.850 V": V is a unit, not an option of ten
    if named:
        if len(named) > 1:
            return NoOption("hedged" if _HEDGE.search(text) else "multiple_answers")
        letter = named.pop()
        return letter if letter in letters else NoOption("not_an_option")
    if _DOUBT.search(text):
        return NoOption("hedged")
    return _option_by_text(text, normalized, choices)


def _mask_options(text: str, choices: list[str] | tuple[str, ...]) -> str:
    """``text`` with every option's own text blanked, longest first, so that a capital
    inside an option ("(B) Vitamin C", "(B) 1 A" with A the unit) is not read as a second
    letter. A one-character option is a letter itself and stays."""
    for choice in sorted(choices, key=len, reverse=True):
        option = choice.strip()
        if len(option) < 2 or option.lower() not in text.lower():
            continue
        text = re.sub(r"(?<![A-Za-z0-9])" + re.escape(option) + r"(?![A-Za-z0-9])", " … ",
                      text, flags=re.IGNORECASE)
    return text


def _letters_named(raw: str, text: str, choices: list[str] | tuple[str, ...]) -> set[str]:
    """Letters the statement names as its pick, in any of the usual phrasings."""
    text = _NEGATED.sub(" ", text)
    named: set[str] = set()
    start = _START.match(text)
    if start is not None and _start_is_letter(start, text, choices):
        named.add(start.group(2).upper())
    for pattern in (_PARENS, _KEYWORD, _IS_CORRECT):
        named.update(match.group(1) for match in pattern.finditer(text))
    for match in _BOLD.finditer(_NEGATED.sub(" ", raw)):
        named.add(match.group(1) or match.group(2))
    if len(text.split()) <= 4:
        for match in _LONE.finditer(text):
            letter = match.group(1)
            after = text[match.end():].lstrip()
            if letter in _ARTICLE_LIKE and after[:1].islower() \
                    and after.split(maxsplit=1)[0] not in ("or", "and"):
                continue
            named.add(letter)
    return named


def _start_is_letter(match: re.Match[str], text: str,
                     choices: list[str] | tuple[str, ...]) -> bool:
    """A letter opening the statement is an option unless it is the article 'A' / 'I' or
    a lower-case word: "B", "(B)", "B. 45°", "b)" are picks, "A cat" is not."""
    bracket, letter, punct = match.group(1), match.group(2), match.group(3)
    rest = text[match.end():].strip()
    if letter.islower() and len(rest.split()) > 6:
        return False  # "(b) The speeds at which ...": a part of the reply, not a pick
    if bracket or punct in (")", "]", ".", ":"):
        return True
    if not rest:
        return True
    if letter.islower():
        return False
    if letter not in _ARTICLE_LIKE:
        return True
    index = CHOICE_LETTERS.find(letter)
    if index < len(choices) and normalize_text(rest).startswith(normalize_text(choices[index])):
        return bool(normalize_text(choices[index]))
    return not rest[:1].islower()


def _option_by_text(text: str, normalized: str,
                    choices: list[str] | tuple[str, ...]) -> str | NoOption:
    """The option whose text the statement contains (whole words; the longest wins when
    one option's text is inside another's), or whose number it states."""
    letters = CHOICE_LETTERS[: len(choices)]
    padded = f" {normalized} "
    found: list[tuple[int, str]] = []
    for index, choice in enumerate(choices):
        option = normalize_text(choice)
        if option and f" {option} " in padded:
            found.append((index, option))
    found = [(i, o) for i, o in found
             if not any(o != other and f" {o} " in f" {other} " for _, other in found)]
    if len(found) == 1:
        return letters[found[0][0]]
    if len(found) > 1:
        return NoOption("hedged" if _HEDGE.search(text) else "multiple_answers")
    number = read_number(text)
    if isinstance(number, Number):
        hits = []
        for index, choice in enumerate(choices):
            option = read_number(choice)
            if isinstance(option, Number) and numbers_match(number, option):
                hits.append(letters[index])
        if len(hits) == 1:
            return hits[0]
    return NoOption("not_an_option")


def read_yes_no(statement: str) -> str | NoOption:
    """'yes' or 'no' from a reply that starts with it or names exactly one of the two."""
    text = plain(statement)
    chinese = ZH_YES_NO.match(ZH_LEAD.sub("", text))
    if chinese is not None and not text.startswith("是否"):
        return "no" if chinese.group(1) else "yes"
    foreign = _foreign_yes_no(text)
    if foreign is not None:
        return foreign
    words = normalize_text(text).split()
    if not words:
        return NoOption("empty_answer")
    named = {word for word in words if word in ("yes", "no")}
    first = "yes" if words[0] in _YES else "no" if words[0] in _NO else None
    if first is not None:
        # The reply's first word is its verdict; a later 'no' inside the same sentence is
        # content ("Yes, ..., although no cars ..."). Only "yes or no" or a later sentence
        # that opens with the other word takes it back.
        if named <= {first} or not (_YES_OR_NO.search(text) or _REVERSAL.search(text)):
            return first
        return NoOption("hedged")
    if len(named) == 1 and not _YES_NO_DOUBT.search(text):
        return named.pop()
    if len(named) > 1 or _YES_NO_DOUBT.search(text):
        return NoOption("hedged")
    return NoOption("no_yes_no")


def _foreign_yes_no(text: str) -> str | None:
    """'Ja, ...', 'Нет.', 'はい', 'Sí': a reply opening with another language's yes or no
    word (``languages.YES_WORDS`` / ``NO_WORDS``), the way a yes/no reply opens in
    English. Only the opening word counts: inside a sentence these words are content."""
    match = _FIRST_WORD.match(text.strip(" \t*_\"'¡¿«"))
    if match is None:
        return None
    words = match.group(0).casefold()
    for candidate in (words, words.split()[0]):
        if candidate in _YES_WORDS:
            return "yes"
        if candidate in _NO_WORDS:
            return "no"
    return None
