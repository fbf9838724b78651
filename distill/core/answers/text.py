"""Text helpers shared by the answer readers: LaTeX and markdown taken off an answer, one
stated normalisation for free text, and the bounds that keep every reader's work small.

Every function here is linear in its input: no regex with nested quantifiers, and inputs
longer than the caps below are clipped before any pattern sees them.
"""

from __future__ import annotations

import re
import string
import unicodedata

# The longest answer statement a reader looks at; a final answer is a few words, a
# closing sentence at most a few lines.
MAX_STATEMENT_CHARS = 400

_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPT_RUN = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")
# \text{..}, \mathrm{..} and friends: keep the content. No nested braces inside (the
# loop below peels one level a pass).
_LATEX_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|emph)\s*"
    r"\{([^{}]*)\}")
_LATEX_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|\^\s*\{\s*°\s*\}")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
# Thousands separators in LaTeX: '16,\\!386', '11,\\! 111', '1\\,000', '1\\ 000'.
_LATEX_GROUP = re.compile(r"(?<=\d)(?:,\\!|\\[,; ]|\{,\})[ ]*(?=\d{3}(?!\d))")
_LATEX_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg|displaystyle)(?![A-Za-z])")
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]|\$\$?")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_TAG = re.compile(r"</?answer\s*>", re.IGNORECASE)
_MARKDOWN = re.compile(r"\*\*|__|`+")
# Characters clean_answer may take off; an answer without any is returned as it is.
_DECORATION = re.compile(r"[*_`\"'$\\<]|[.。!]$")
_SPACES = re.compile(r"\s+")
_VULGAR = re.compile(r"(\d?)([\u00bc-\u00be\u2150-\u215e])")
_ARTICLES = {"a", "an", "the"}
# Punctuation removed by normalize_text; the degree sign goes too ("45°" ~ "45").
_PUNCTUATION = str.maketrans("", "", string.punctuation + "°·•“”‘’«»")


def clip(text: str, limit: int = MAX_STATEMENT_CHARS) -> str:
    """The first ``limit`` characters: bounded work for everything downstream."""
    return text if len(text) <= limit else text[:limit]


def unwrap_boxed(text: str) -> str:
    """Replace every ``\\boxed{X}`` (and ``\\fbox``) by X, braces balanced; an unclosed one
    is dropped with what follows it (a torn box holds no answer)."""
    out, index = [], 0
    for _ in range(16):  # a statement holds a handful of boxes at most
        match = _BOXED.search(text, index)
        if match is None:
            break
        end = matching_brace(text, match.end() - 1)
        out.append(text[index:match.start()])
        if end is None:
            return "".join(out)
        out.append(text[match.end():end])
        index = end + 1
    out.append(text[index:])
    return "".join(out)


def matching_brace(text: str, open_index: int, limit: int = 2000) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_index`` (None: not closed within
    ``limit`` characters)."""
    depth = 0
    stop = min(len(text), open_index + limit)
    for index in range(open_index, stop):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def brace_pairs(text: str) -> dict[int, int]:
    """Every ``{`` of ``text`` that is closed, mapped to its ``}``: one linear pass, so
    finding the end of many boxes costs no more than reading the text once."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
    return pairs


def strip_latex(text: str) -> str:
    """Plain text of a LaTeX-ish answer: boxes, math delimiters, ``\\text{}``, spacing and
    sizing commands go; ``^\\circ`` becomes '°', ``\\%`` '%', ``\\$`` '$', ``{,}`` ','.
    ``\\frac``, ``\\sqrt``, ``\\pi``, ``\\times`` stay: the number reader evaluates them."""
    if "\\" not in text and "$" not in text:
        return text
    value = unwrap_boxed(text)
    for _ in range(3):
        value, count = _LATEX_WRAPPER.subn(r"\1", value)
        if not count:
            break
    value = _LATEX_DEGREE.sub("°", value)
    value = _LATEX_GROUP.sub(lambda m: "" if m.group(0).startswith("\\") else ",", value)
    value = value.replace("\\%", "%").replace("\\$", "$").replace("{,}", ",")
    value = value.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    value = value.replace("\\cfrac", "\\frac")
    value = _LATEX_SPACE.sub(" ", value)
    value = _LATEX_SIZING.sub("", value)
    value = _MATH_DELIMITERS.sub(" ", value)
    return value


def plain(text: str) -> str:
    """An answer as a grader reads it: no LaTeX wrappers, no markdown, superscript digits
    as ``^{..}``, compatibility characters folded (full-width digits), one space."""
    value = clip(text)
    value = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPT_DIGITS) + "}",
                                 value)
    value = _VULGAR.sub(_vulgar, value)
    value = unicodedata.normalize("NFKC", value)
    value = value.replace("−", "-").replace("–", "-").replace("\u00a0", " ").replace("{,}", ",")
    value = _ANSWER_TAG.sub(" ", value)
    value = strip_latex(value)
    value = _MARKDOWN.sub("", value)
    return _SPACES.sub(" ", value).strip()


def _vulgar(match: re.Match[str]) -> str:
    """'1½' -> '1 1/2', '¾' -> '3/4' (NFKC alone would glue '1½' into '11⁄2')."""
    fraction = unicodedata.normalize("NFKC", match.group(2)).replace("\u2044", "/")
    return f"{match.group(1)} {fraction}" if match.group(1) else fraction


def clean_answer(answer: str) -> str:
    """The answer as stated, without decoration: markdown, $, boxes, quotes, a final '.'.

    This is what a trace records as its final answer and an eval item as its extracted
    answer: what the model said, readable, not yet interpreted."""
    value = clip(answer).strip()
    if not _DECORATION.search(value):
        return value
    for _ in range(3):
        value = _ANSWER_TAG.sub("", value).strip()
        boxed = _BOXED.match(value)
        if boxed is not None and matching_brace(value, boxed.end() - 1) == len(value) - 1:
            value = value[boxed.end():-1].strip()
        value = value.strip("*_`\"' ").strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)")):
            if len(value) > len(left) + len(right) and value.startswith(left) \
                    and value.endswith(right):
                value = value[len(left):-len(right)].strip()
        value = value.rstrip(".。!").strip()
    return value


def normalize_text(text: str) -> str:
    """The stated normalisation of free-text answers: LaTeX and markdown off, NFKC,
    lower case, punctuation (and '°') removed, articles dropped, single spaces."""
    words = plain(text).lower().translate(_PUNCTUATION).split()
    return " ".join(word for word in words if word not in _ARTICLES)


def word_count(text: str) -> int:
    return len(text.split())
