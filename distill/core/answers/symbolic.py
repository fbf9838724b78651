"""Symbolic equality of short LaTeX expressions ('x^2 - 1' vs '(x-1)(x+1)') through
math-verify, for free-text answers that are formulas.

Bounded work is the contract: math-verify's own timeouts use ``signal.alarm`` (main thread
only), so they are switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and
instead only inputs whose cost is small are handed over: short, few operators, small
integer exponents, no factorials or nested powers. Anything else is "not shown equal".
Numbers never come here: the number reader evaluates LaTeX arithmetic itself.
"""

from __future__ import annotations

import logging
import re

MAX_CHARS = 48
MAX_OPERATORS = 8
_HINT = re.compile(r"\\(?:frac|sqrt|pi|cdot|times|sin|cos|tan|log|ln)|\^|[a-z]\s*[+\-*/]",
                   re.IGNORECASE)
_EXPONENT = re.compile(r"\^\s*(\{[^}]*\}|\S)")
_SMALL_EXPONENT = re.compile(r"\^\s*(?:\{\s*-?\d\s*\}|\d)(?!\d)")
_FORBIDDEN = re.compile(r"!|\\(?:int|sum|prod|lim|infty|binom|begin)|\^\s*\{[^}]*\^")
_OPERATORS = re.compile(r"[+\-*/^]|\\(?:frac|sqrt|cdot|times)")


def looks_symbolic(text: str) -> bool:
    return bool(_HINT.search(text))


def _cheap(text: str) -> bool:
    if len(text) > MAX_CHARS or _FORBIDDEN.search(text):
        return False
    if len(_OPERATORS.findall(text)) > MAX_OPERATORS:
        return False
    return len(_EXPONENT.findall(text)) == len(_SMALL_EXPONENT.findall(text))


def symbolically_equal(gold: str, predicted: str) -> bool:
    """True only when math-verify shows the two short expressions equal."""
    if not (_cheap(gold) and _cheap(predicted)):
        return False
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=None)
        pred_parsed = parse(f"${predicted}$", parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - any parser failure means "not shown equal"
        return False
