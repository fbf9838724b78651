"""Formulas as free-text answers ('x^2 + 1', '\\frac{\\pi}{2}'): compared by a compact
spelling, and by value when they hold no variable (the number reader evaluates LaTeX).

Symbolic equality with variables ('(x+1)^2' vs 'x^2 + 2x + 1') is not attempted: through
math-verify/sympy a single call costs 20-450 ms of CPU even on such short inputs, over the
judge's bound of 50 ms per output, and no cap on input size makes it reliably small.
"""

from __future__ import annotations

import re

_HINT = re.compile(r"\\(?:frac|sqrt|pi|cdot|times)|\^|[A-Za-z]\s*[+\-*/=]|[+\-*/=]\s*[A-Za-z]")
_NOISE = re.compile(r"\\(?:left|right|,|;|!|quad)|\s+|\$")
_TIMES = re.compile(r"\\(?:cdot|times)|×|·")


def looks_symbolic(text: str) -> bool:
    return bool(_HINT.search(text))


def formula_key(text: str) -> str:
    """One spelling of a formula: no spaces or sizing commands, '\\dfrac' as '\\frac',
    products as '*', one-character exponents braced ('x^2' as 'x^{2}')."""
    value = _NOISE.sub("", text[:400]).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    value = _TIMES.sub("*", value)
    return re.sub(r"\^([^{])", r"^{\1}", value).lower()


def formulas_equal(gold: str, predicted: str) -> bool:
    return formula_key(gold) == formula_key(predicted)
