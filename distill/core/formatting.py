"""Figures as text, written one way everywhere: percentages, intervals, shares, p-values and
tables (Markdown, or HTML with every cell escaped).

The CLI's tables, the demo's summary, the compare and seed reports, the filter report and
``distill answers`` all format through here, so one figure reads the same in each of them:
an accuracy of 0.8125 with its interval is ``81.2 [78.0, 84.1]`` wherever it appears.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence


def percent(value: float, *, signed: bool = False) -> str:
    """A fraction as a percentage with one decimal, no sign of its own: 0.8125 -> "81.2"
    (``signed``: "+81.2", for differences)."""
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def interval(value: float, low: float, high: float, *, signed: bool = False,
             unit: str = "") -> str:
    """A fraction and its interval in percent: "81.2 [78.0, 84.1]" (``unit`` follows the
    value: "81.2% [78.0, 84.1]")."""
    return (f"{percent(value, signed=signed)}{unit} [{percent(low, signed=signed)}, "
            f"{percent(high, signed=signed)}]")


def accuracy_interval(metrics: Mapping[str, float], *, unit: str = "") -> str:
    """An EvalResult's accuracy with its 95% interval (its metrics ``accuracy``,
    ``accuracy_ci_low`` and ``accuracy_ci_high``)."""
    return interval(metrics["accuracy"], metrics["accuracy_ci_low"],
                    metrics["accuracy_ci_high"], unit=unit)


def share(part: float, whole: float) -> str:
    """``part`` of ``whole`` in percent with its sign: "12.5%"; "-" when there is no whole."""
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def p_value(value: float) -> str:
    """Three significant digits, and "<0.001" below that."""
    return f"{value:.3g}" if value >= 0.001 else "<0.001"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; a ``|`` or a line break inside a cell cannot break it.

    ``align``: one letter a column, ``l`` or ``r`` ("lrr": the first column left, the others
    right); columns without one are left as Markdown's default.
    """
    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {_md_cell(c)} " if c else " " for c in cells) + "|"

    rules = ["---:" if align[i:i + 1] == "r" else "---" for i in range(len(header))]
    return "\n".join([line(header), "|" + "|".join(rules) + "|", *map(line, rows)])


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A bare HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
