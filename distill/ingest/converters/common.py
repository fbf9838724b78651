"""Small pieces several benchmarks share: why an item is skipped, and an answer's type."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class Skipped(Exception):  # noqa: N818 - a reason, raised to leave an item out, not an error
    """An item the eval cannot use (no image, several images); counted by reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def answer_type_of(answer: str) -> str:
    """'number' for a plain number (commas as thousands separators allowed), else 'text'."""
    text = answer.strip().replace(",", "")
    return "number" if _NUMBER.match(text) else "text"


def plain_number(answer: str) -> str:
    """'1,234' -> '1234' (a number answer is stored without separators)."""
    return answer.strip().replace(",", "")
