"""Numbers as models write them, and comparing them the way number benchmarks grade.

A number answer is read from a statement ("In 2015, the value was 42.", "3 + 4 = 7",
"\\frac{2}{3}", "1.2 \\times 10^{5} m", "45%", "1,200 people", the mixed numbers
"2\\frac{1}{2}", "2 1/2" and "2½", "图中一共有6只鸭子") by a small scanner with a
recursive-descent parser for LaTeX arithmetic (\\frac, \\sqrt, \\pi, powers, scientific
notation). No sympy on this path: every step is bounded by the statement's length.

Rules, in order, on the statement:

1. A refusal or an avowed doubt ("cannot determine", "not sure") is no answer.
2. Explanations are cut ("12 because 3 x 4 = 12" -> "12"); negated alternatives are
   dropped ("5, not 4" -> "5").
3. The value is what follows the last '=' (or '≈'), else the last copula ("is", "was",
   "are", "equals") when a number follows it.
4. Parenthesised numbers are asides when a number stands outside them.
5. Exactly one value must remain: two different values are a hedge ("3 or 4", "between
   10 and 12", "10-12") or several answers, and neither is an answer.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from distill.core.answers.text import plain

# Relative and absolute slack for "the same number" (float noise, not rounding).
REL_TOL = 1e-6
ABS_TOL = 1e-9
MAX_EXPONENT = 300
MAX_DEPTH = 12

_NUMBER_WORDS = {
    word: index for index, word in enumerate([
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen", "twenty",
    ])
}
_TENS = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90, "twenty": 20}
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_NUMBER_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")

_DOUBT = re.compile(
    r"\b(?:cannot|can ?not|can't|unable to|impossible to) (?:be )?(?:determine|tell|say|"
    r"know|answer|see|read|identify)|\bnot (?:sure|certain|possible to)\b|\bunclear\b|"
    r"\bunknown\b|\bundetermined\b|\bno (?:way|answer)\b|\binsufficient\b",
    re.IGNORECASE)
_HEDGE = re.compile(r"\b(?:or|between|either|maybe|perhaps|possibly|range)\b|\d\s*(?:-|to)\s*\d",
                    re.IGNORECASE)
_EXPLANATION = re.compile(
    r"(?:,\s*|\s+)(?:because|since|given that|due to|as shown|as seen|as the|"
    r"which(?!\s+(?:is|equals)\s+[-$\\\d])|where|"
    r"so that|for (?:a|an|the) total)\b.*$", re.IGNORECASE | re.DOTALL)
# "5, not 4", "not it's not 10 it's 1,000.99": the negation takes its first number only.
_NEGATED = re.compile(
    r"(?:,\s*|\s+|\(|^)(?:not|rather than|instead of)\s+[^,;.()\d]{0,40}?"
    r"-?\d+(?:[.,]\d+)*(?:\s*%)?\)?", re.IGNORECASE)
_APPROX = re.compile(r"≈|\\approx")
_EQUALS = re.compile(r"=|≈|\\approx")
_EQUALS_ONLY = re.compile(r"=")
_COPULA = re.compile(r"\b(?:is|was|are|were|equals|becomes)\b", re.IGNORECASE)
_PARENTHESES = re.compile(r"\([^()]*\)")
_SIMPLE = re.compile(r"-?\d{1,15}(?:\.(\d{1,15}))?")
_RATIO = re.compile(r"(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)")
_YEAR_CONTEXT = re.compile(r"\b(?:in|since|from|by|during|until|year|after|before)\s+(\d{4})\b",
                           re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_LITERAL = re.compile(r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+")
_EXPONENT = re.compile(r"[eE]([-+]?\d{1,3})(?![A-Za-z\d])")
_TIMES_TEN = re.compile(r"\s*(?:\\times|\\cdot|×|\*|x|·)\s*10\s*\^\s*")
_COMMAND = re.compile(r"\\([A-Za-z]+)")
_PERCENT = re.compile(r"\s*(?:%|percent\b|per cent\b)", re.IGNORECASE)
_SCALE = re.compile(r"\s*(thousand|million|billion|trillion)\b", re.IGNORECASE)
# A whole number then a proper fraction: '2\\frac{1}{2}', '2 1/2'.
_MIXED = re.compile(r"(?<![\d.,/^])(\d{1,9})(?:[ \t]*\\frac\{(\d{1,9})\}\{(\d{1,9})\}|"
                    r"[ \t]+(\d{1,9})/(\d{1,9})(?![\d/.]))")


@dataclass(frozen=True)
class Number:
    """A number an answer states.

    ``decimals``: digits after the point as written (None for an exact form: a fraction,
    a root, pi), so a gold answer rounded to fewer decimals can be matched.
    ``alternatives``: the other meanings of the same words: '45%' is 45 or 0.45, '1.2
    million' is 1200000 or 1.2 (a chart in millions)."""

    value: float
    decimals: int | None = 0
    alternatives: tuple[float, ...] = ()

    @property
    def values(self) -> tuple[float, ...]:
        return (self.value, *self.alternatives)

    def canonical(self) -> str:
        return f"{self.value + 0.0:.10g}"  # + 0.0: no '-0'


@dataclass(frozen=True)
class NotANumber:
    reason: str  # "empty_answer" | "hedged" | "multiple_answers" | "not_a_number"


def read_number(statement: str, given: tuple[float, ...] = (),
                decimal: str | None = None, expressions: bool = False) -> Number | NotANumber:
    """The one number a statement gives as its answer (see the module's rules).

    ``given``: numbers of the question itself; a reply that restates them ("2 objects
    are preferred by more than 7 people") is read by the number it adds. ``decimal``: the
    output's decimal convention ('comma', 'point', 'mixed' or None; see
    ``normalize_separators``). ``expressions``: a closed form the scanner cannot evaluate
    goes to the math-verify tier (``expression_value``)."""
    simple = _SIMPLE.fullmatch(statement.strip())
    if simple and not (decimal in ("comma", "mixed") and len(simple.group(1) or "") == 3):
        return Number(float(simple.group(0)), len(simple.group(1) or ""))  # '26', '-3.5'
    text = plain(statement)
    if not text:
        return NotANumber("empty_answer")
    if _DOUBT.search(text):
        return NotANumber("hedged")
    if _INFINITY.fullmatch(text.strip(" .")):
        return Number(math.inf, None)
    text = normalize_separators(text, decimal)
    if text is None:
        return NotANumber("ambiguous_number")
    read = _read_focused(_mixed_numbers(_focus(text, given)), given)
    if expressions and isinstance(read, NotANumber) \
            and read.reason in ("not_a_number", "multiple_answers") \
            and len(statement) <= EXPRESSION_MAX_CHARS and _LATEX_EXPRESSION.search(statement) \
            and not _BIG_LITERAL.search(statement):
        return expression_value(statement) or read
    return read


def _read_focused(text: str, given: tuple[float, ...]) -> Number | NotANumber:
    ratio = _RATIO.fullmatch(text.strip(" ."))
    if ratio and float(ratio.group(2)):
        return Number(float(ratio.group(1)) / float(ratio.group(2)), None)
    found = scan_numbers(text)
    if not found:
        word = _number_word(text)
        return NotANumber("not_a_number") if word is None else Number(float(word))
    distinct = _distinct(found)
    if len(distinct) > 1:
        distinct = _distinct([n for n in found if not _is_given(n, given)]
                             ) or distinct
    if len(distinct) > 1:
        distinct = _distinct([n for n in found if not _is_date(n, text)]) or distinct
    if len(distinct) > 1:
        return NotANumber("hedged" if _HEDGE.search(text) else "multiple_answers")
    return distinct[0]


def _mixed_numbers(text: str) -> str:
    """'2\\frac{1}{2}' and '2 1/2' (and '2½', spelled '2 1/2' by ``plain``) as the sums they
    mean, '(2+1/2)', so the scanner reads one number, not two."""
    if "/" not in text and "\\frac" not in text:
        return text
    return _MIXED.sub(lambda m: (f"({m.group(1)}+{m.group(2) or m.group(4)}/"
                                 f"{m.group(3) or m.group(5)})"
                                 if _proper(m) else m.group(0)), text)


def _proper(match: re.Match[str]) -> bool:
    numerator = int(match.group(2) or match.group(4))
    return 0 < numerator < int(match.group(3) or match.group(5))


def _distinct(found: list[Number]) -> list[Number]:
    """The different values among ``found``, each by its last mention."""
    out: list[Number] = []
    for number in reversed(found):
        if not any(same_value(number.value, other.value) for other in out):
            out.append(number)
    return out[::-1]


def _is_given(number: Number, given: tuple[float, ...]) -> bool:
    return any(same_value(number.value, value) for value in given)


def _is_date(number: Number, text: str) -> bool:
    """A year after 'in', 'since', 'from', ... ('In 2015, ...'): a date, not a value."""
    if number.decimals != 0 or not 1800 <= number.value <= 2100:
        return False
    return any(match.group(1) == str(int(number.value))
               for match in _YEAR_CONTEXT.finditer(text))


def _focus(text: str, given: tuple[float, ...] = ()) -> str:
    """The part of a statement that holds its value (rules 2-4): a tail counts when it
    holds a number the question did not give."""
    text = _EXPLANATION.sub("", text) or text
    text = _NEGATED.sub(" ", text)
    exact = _APPROX.split(_EQUALS_ONLY.split(text)[-1])
    parts = _EQUALS.split(text)
    if "=" in text and len(exact) > 1 and _fresh(exact[0], given):
        text = exact[0]  # "x = 1/3 ≈ 0.33": the exact value is the answer, not its rounding
    elif len(parts) > 1 and _fresh(parts[-1], given):
        text = parts[-1]
    copulas = list(_COPULA.finditer(text))
    if copulas:
        tail = text[copulas[-1].end():]
        if _fresh(tail, given):
            text = tail
    outside = _PARENTHESES.sub(" ", text)
    if outside != text and _fresh(outside, given):
        text = outside
    return text


def _fresh(text: str, given: tuple[float, ...]) -> bool:
    """Whether ``text`` states a number (one not given by the question, when known)."""
    if not _DIGIT.search(text) and "\\" not in text:
        return False
    if not given:
        return True
    return any(not _is_given(number, given) for number in scan_numbers(text))


def _number_word(text: str) -> int | None:
    """'three', 'Twenty-five', 'There are three people': one number word (up to 99). In
    a longer sentence 'one' is too often a pronoun ('the one on the left') to count."""
    words = [w for w in _NUMBER_WORD.findall(text.lower()) if w not in ("a", "an", "the")]
    if len(words) > 4:
        words = [w for w in words if w != "one"]
    values = []
    for word in words:
        head, _, tail = word.partition("-")
        if head in _NUMBER_WORDS and not tail:
            values.append(_NUMBER_WORDS[head])
        elif head in _TENS and (not tail or tail in _NUMBER_WORDS and _NUMBER_WORDS[tail] < 10):
            values.append(_TENS[head] + (_NUMBER_WORDS[tail] if tail else 0))
    return values[0] if len(values) == 1 else None


# --- the scanner ---------------------------------------------------------------------------


def scan_numbers(text: str) -> list[Number]:
    """Every number written in ``text``, LaTeX arithmetic evaluated, units ignored.

    Digits glued to a letter, '^' or '_' belong to a name or a unit ('cm2', 'x_1',
    'm^2') and are not numbers; a '-' glued to a digit is a range, not a sign."""
    found: list[Number] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char == "^":  # an exponent of a unit or a name: m^2, cm^{2}, x^{10}
            index = _after_exponent(text, index + 1)
            continue
        starts = (char.isdigit() or char in "\\π√(" or
                  (char in "-+." and index + 1 < length and (text[index + 1].isdigit()
                                                             or text[index + 1] in "\\.")))
        if not starts or (index and _glued(text[index - 1])):
            index += 1
            continue
        if char in "-+" and index and (text[index - 1].isdigit() or text[index - 1] in ")}"):
            index += 1
            continue
        parsed = _Parser(text, index).number()
        if parsed is None:  # not a number here: skip the whole digit run ('1/0')
            index += 1
            while index < length and (text[index].isdigit() or text[index] in "./,"):
                index += 1
            continue
        node, end = parsed
        number = _with_suffixes(node, text, end)
        found.append(number[0])
        index = max(number[1], index + 1)
    return found


def _glued(char: str) -> bool:
    """Whether a number right after ``char`` is part of a name ('x2', 'm_1', '∠2'). Only
    Latin and Greek letters name things so: a Chinese, Japanese, Thai, Cyrillic ... letter
    is a word of its own ('一共有6只', '答えは460です')."""
    return (char.isalpha() and char <= "\u03ff") or char in "^_∠△"


# --- separators by convention ---------------------------------------------------------------

_GROUPED_SPACE = re.compile(r"(?<![\d.,])\d{1,3}(?:[ \u00a0\u2009\u202f'’]\d{3})+(?![\d/])")
_SEPARATED = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)+(?![\d])")
_COMMA_DECIMAL = re.compile(r"\d,(?:\d{1,2}|\d{4,})(?![\d,])")
_POINT_DECIMAL = re.compile(r"\d\.(?:\d{1,2}|\d{4,})(?![\d.])")
_COMMA_GROUPS = re.compile(r"\d{1,3}(?:,\d{3}){2,}(?![\d])|\d,\d{3}\.\d")
_POINT_GROUPS = re.compile(r"\d{1,3}(?:\.\d{3}){2,}(?![\d])|\d\.\d{3},\d")


def decimal_evidence(text: str) -> str | None:
    """The decimal convention an output's own numbers show: 'comma' ('11,25', '1.234.567'),
    'point' ('37.89', '1,234,567'), 'mixed' (both), or None (no telling number)."""
    if "," not in text and "." not in text:
        return None
    comma = bool(_COMMA_DECIMAL.search(text) or _POINT_GROUPS.search(text))
    point = bool(_POINT_DECIMAL.search(text) or _COMMA_GROUPS.search(text))
    return "mixed" if comma and point else "comma" if comma else "point" if point else None


def normalize_separators(text: str, decimal: str | None) -> str | None:
    """Numbers rewritten with a decimal point and no group separators, by the output's
    convention. Spaces, thin spaces and apostrophes between groups of three join ('1 000',
    "1'000"); with both ',' and '.' the last is the decimal; several of one are groups; a
    lone ',' or '.' followed by other than three digits is a decimal ('1,22', '3.5'). A
    lone one followed by three digits ('1,000', '1.500') follows ``decimal``: 'comma' makes
    ',' the decimal and '.' a group, 'point' or None (the common case) the reverse, and
    'mixed' (an output that writes both) leaves it a true ambiguity: None."""
    if not any(mark in text for mark in " ,.'’\u00a0\u2009\u202f"):
        return text
    text = _GROUPED_SPACE.sub(lambda m: re.sub(r"[^\d]", "", m.group(0)), text)
    ambiguous = False

    def rewrite(match: re.Match[str]) -> str:
        nonlocal ambiguous
        token = match.group(0)
        marks = [c for c in token if c in ",."]
        if "," in marks and "." in marks:
            whole, _, fraction = token.rpartition(marks[-1])
            return re.sub(r"[.,]", "", whole) + "." + fraction
        mark = marks[0]
        if len(marks) > 1:
            return token.replace(mark, "") if all(len(g) == 3 for g in token.split(mark)[1:]) \
                else token
        whole, _, fraction = token.partition(mark)
        if len(fraction) != 3 or whole.startswith("0"):
            return token if mark == "." or decimal == "point" else f"{whole}.{fraction}"
        if decimal == "mixed":
            ambiguous = True
            return token
        decimal_mark = "," if decimal == "comma" else "."
        return f"{whole}.{fraction}" if mark == decimal_mark else whole + fraction

    text = _SEPARATED.sub(rewrite, text)
    return None if ambiguous else text


# --- expressions the scanner does not evaluate: a math-verify tier ---------------------------

# The math-verify tier takes short closed forms with small literals only: sympy's work
# on '\\binom{10^6}{5 \\cdot 10^5}' is unbounded.
EXPRESSION_MAX_CHARS = 120
_BIG_LITERAL = re.compile(r"\d{7,}|\^\s*\{?\s*\d{3,}")
_INFINITY = re.compile(r"\\infty|∞|\+\\infty|infinity|infinite", re.IGNORECASE)
# LaTeX the scanner does not evaluate (\log, \ln, trig, \binom, \infty, e^...).
_LATEX_EXPRESSION = re.compile(r"\\(?:log|ln|exp|sin|cos|tan|binom|infty)(?![A-Za-z])|\be\^")


def expression_value(statement: str) -> Number | None:
    """The value of a closed-form answer the scanner cannot evaluate ('\\frac{1}{2}\\log
    2\\pi'), through math-verify when it is installed (the ``peers`` extra): a fallback
    tier, reached only after the scanner failed on an answer with such LaTeX, so the
    common path never pays for sympy. Returns None without math-verify, on a parse failure,
    or when the expression has free symbols (not a number)."""
    try:
        from math_verify import parse
    except ImportError:  # pragma: no cover - the tier is optional
        return None
    # parsing_timeout=None (math-verify's alarm works on the main thread only) makes it
    # warn on every call; the input is bounded (MAX_STATEMENT_CHARS) instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    text = statement.strip()
    if "$" not in text and "\\(" not in text and "\\[" not in text:
        text = f"${text}$"
    try:
        parsed = parse(text, parsing_timeout=None)
    except Exception:  # noqa: BLE001 - any parse failure is 'no value'
        return None
    for expression in parsed:
        try:
            if getattr(expression, "free_symbols", None):
                continue
            value = complex(expression.evalf())
        except (TypeError, ValueError, AttributeError):
            continue
        if value.imag == 0 and math.isfinite(value.real):
            return Number(value.real, None)
    return None


def _after_exponent(text: str, index: int) -> int:
    """Index just past the exponent starting at ``index`` ('{..}' or a signed number)."""
    if index < len(text) and text[index] == "{":
        close = text.find("}", index, index + 40)
        return index + 1 if close == -1 else close + 1
    if index < len(text) and text[index] in "-+":
        index += 1
    while index < len(text) and (text[index].isdigit() or text[index] == "."):
        index += 1
    return index


@dataclass(frozen=True)
class _Node:
    value: float
    decimals: int | None  # None: an exact form (fraction, root, pi, power)
    latex: bool = False


def _with_suffixes(node: _Node, text: str, end: int) -> tuple[Number, int]:
    """Percent and scale words after a number give its alternative meanings."""
    percent = _PERCENT.match(text, end)
    if percent:
        return Number(node.value, node.decimals, (node.value / 100,)), percent.end()
    scale = _SCALE.match(text, end)
    if scale:
        factor = _SCALES[scale.group(1).lower()]
        return Number(node.value * factor, None, (node.value,)), scale.end()
    return Number(node.value, node.decimals), end


class _Parser:
    """Recursive descent over one number expression starting at ``start``:

        sum     := product (('+'|'-') product)*   -- only with a LaTeX term on a side
        product := unary (('\\times'|'\\cdot'|'*'|'/') unary | implicit-latex-factor)*
        unary   := ('-'|'+')? power
        power   := atom ('^' (atom | '{' sum '}'))?
        atom    := literal ('e' exp)? | '(' sum ')' | '{' sum '}' | '\\frac{sum}{sum}'
                 | '\\sqrt' ('[' sum ']')? '{' sum '}' | '\\pi' | 'π' | '√' atom

    ``number()`` returns the parsed value and where it ends, or None. Depth is capped and
    exponents are bounded, so no input makes it deep or slow."""

    def __init__(self, text: str, start: int) -> None:
        self.text, self.pos, self.depth = text, start, 0

    def number(self) -> tuple[_Node, int] | None:
        try:
            node = self.sum(top=True)
        except (_Fail, OverflowError, ZeroDivisionError, ValueError):
            return None
        if node is None or not math.isfinite(node.value):
            return None
        return node, self.pos

    # -- helpers --
    def peek(self, skip_space: bool = True) -> str:
        pos = self.pos
        if skip_space:
            while pos < len(self.text) and self.text[pos] == " ":
                pos += 1
        return self.text[pos] if pos < len(self.text) else "\x00"  # never `in` an operator set

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def command(self) -> str | None:
        match = _COMMAND.match(self.text, self.pos)
        return match.group(1) if match else None

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Fail

    # -- grammar --
    def sum(self, top: bool = False) -> _Node:
        self.enter()
        left = self.product()
        while True:
            save = self.pos
            self.skip()
            op = self.peek(skip_space=False)
            if op not in ("+", "-"):
                self.pos = save
                break
            self.pos += 1
            try:
                right = self.product()
            except _Fail:
                self.pos = save
                break
            if top and not (left.latex or right.latex):
                self.pos = save  # "10-12" is a range, "3 + 4" two numbers: not one sum
                break
            value = left.value + right.value if op == "+" else left.value - right.value
            left = _Node(value, None, True)
        self.depth -= 1
        return left

    def product(self) -> _Node:
        left = self.unary()
        while True:
            save = self.pos
            times = _TIMES_TEN.match(self.text, self.pos)
            if times:  # 1.2 \times 10^{5}: scientific notation
                self.pos = times.end()
                exponent = self.exponent()
                left = _Node(left.value * 10.0 ** exponent.value, None, True)
                continue
            self.skip()
            char = self.peek(skip_space=False)
            command = self.command() if char == "\\" else None
            if command in ("times", "cdot") or char in "*×·/":
                self.pos += len(command) + 1 if command else 1
                try:
                    right = self.unary()
                except _Fail:
                    self.pos = save
                    break
                value = left.value / right.value if char == "/" else left.value * right.value
                left = _Node(value, None, left.latex or right.latex or char != "/")
                continue
            if command in ("sqrt", "pi", "frac") or char in "π√":
                right = self.unary()  # implicit product: 2\sqrt{3}, 3\pi
                left = _Node(left.value * right.value, None, True)
                continue
            self.pos = save
            break
        return left

    def unary(self) -> _Node:
        self.skip()
        char = self.peek(skip_space=False)
        if char in ("-", "+"):
            self.pos += 1
            node = self.power()
            return _Node(-node.value, node.decimals, node.latex) if char == "-" else node
        return self.power()

    def power(self) -> _Node:
        base = self.atom()
        if self.peek(skip_space=False) == "^":
            self.pos += 1
            exponent = self.exponent()
            if abs(base.value) > 1e6 and abs(exponent.value) > 50:
                raise _Fail
            return _Node(base.value ** exponent.value, None, True)
        return base

    def exponent(self) -> _Node:
        self.skip()
        if self.peek(skip_space=False) == "{":
            node = self.group("{", "}")
        else:
            sign = -1.0 if self.peek(skip_space=False) == "-" else 1.0
            if self.peek(skip_space=False) in "-+":
                self.pos += 1
            node = self.literal()
            node = _Node(sign * node.value, None)
        if abs(node.value) > MAX_EXPONENT:
            raise _Fail
        return node

    def atom(self) -> _Node:
        self.skip()
        char = self.peek(skip_space=False)
        if char.isdigit() or char == ".":
            node = self.literal()
            exponent = _EXPONENT.match(self.text, self.pos)
            if exponent and abs(int(exponent.group(1))) <= MAX_EXPONENT:
                self.pos = exponent.end()
                node = _Node(node.value * 10.0 ** int(exponent.group(1)), None)
            return node
        if char in "({":
            return self.group(char, ")" if char == "(" else "}")
        if char == "π":
            self.pos += 1
            return _Node(math.pi, None, True)
        if char == "√":
            self.pos += 1
            self.enter()
            return _Node(math.sqrt(self.atom().value), None, True)
        command = self.command() if char == "\\" else None
        if command == "pi":
            self.pos += 3
            return _Node(math.pi, None, True)
        if command == "frac":
            self.pos += 5
            numerator = self.braced()
            denominator = self.braced()
            return _Node(numerator.value / denominator.value, None, True)
        if command == "sqrt":
            self.pos += 5
            self.skip()
            degree = 2.0
            if self.peek(skip_space=False) == "[":
                degree = self.group("[", "]").value
            radicand = self.braced()
            if radicand.value < 0 or degree == 0:
                raise _Fail
            return _Node(radicand.value ** (1.0 / degree), None, True)
        raise _Fail

    def braced(self) -> _Node:
        """A ``{..}`` argument, or LaTeX's one-character shorthand (``\\frac12``)."""
        self.skip()
        if self.peek(skip_space=False) == "{":
            return self.group("{", "}")
        char = self.peek(skip_space=False)
        if char.isdigit():
            self.pos += 1
            return _Node(float(char), 0)
        raise _Fail

    def group(self, open_char: str, close_char: str) -> _Node:
        self.pos += 1
        self.enter()
        node = self.sum()
        self.skip()
        if self.peek(skip_space=False) != close_char:
            raise _Fail
        self.pos += 1
        self.depth -= 1
        return _Node(node.value, node.decimals, node.latex or open_char != "(")

    def literal(self) -> _Node:
        match = _LITERAL.match(self.text, self.pos)
        if match is None:
            raise _Fail
        self.pos = match.end()
        token = match.group(0).replace(",", "")
        whole, _, fraction = token.partition(".")
        return _Node(float(token), len(fraction))


class _Fail(Exception):
    """The text at this position is not (the rest of) a number expression."""


# --- comparing -----------------------------------------------------------------------------


def same_value(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def round_half_up(value: float, decimals: int) -> Decimal | None:
    """Rounding as people do it (2.675 -> 2.68), not as binary floats do."""
    try:
        return Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return None


def numbers_match(predicted: Number, gold: Number, *, precision: int | None = None,
                  relative_tolerance: float | None = None) -> bool:
    """Whether a predicted number is the gold one, as number benchmarks grade:

    * equal up to float noise, in any of its meanings ('45%' is 45 or 0.45);
    * with ``relative_tolerance`` (ChartQA's relaxed accuracy: 0.05), within that share
      of the gold value;
    * with ``precision`` (MathVista: decimals of the gold), equal once rounded to it;
    * without a stated precision, a gold with decimals is taken as rounded to them when
      the prediction is more exact (an exact form, or more decimals): '2/3' and '0.667'
      match '0.67'; '0.7' does not."""
    target = gold.value
    for value in predicted.values:
        if same_value(value, target):
            return True
        if relative_tolerance is not None and target != 0 \
                and abs(value - target) <= relative_tolerance * abs(target) + ABS_TOL:
            return True
        places = precision
        if places is None and gold.decimals:
            more_exact = predicted.decimals is None or predicted.decimals > gold.decimals
            places = gold.decimals if more_exact else None
        if places is not None and places >= 0:
            rounded = round_half_up(value, places)
            if rounded is not None and rounded == round_half_up(target, places):
                return True
    return False


def parse_number(text: str) -> float | None:
    """The value of a short number answer, or None (kept for callers that want a float)."""
    number = read_number(text)
    return number.value if isinstance(number, Number) else None
