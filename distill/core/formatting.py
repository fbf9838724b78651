"""Figures and names as text, written one way everywhere: percentages, intervals, shares,
p-values, tables (Markdown, or HTML with every cell escaped), and the names users give.

The CLI's tables, the demo's summary, the compare and seed reports, the filter report and
``distill answers`` all format through here, so one figure reads the same in each of them:
an accuracy of 0.8125 with its interval is ``81.2 [78.0, 84.1]`` wherever it appears.

Names (a model, an eval set, a category, a teacher, a policy, a path) are data, never
markup: ``plain`` is the one function every printer passes them through, for the medium it
writes (a terminal through rich, a log line, Markdown, HTML, a matplotlib plot, a file
name). ``vlm[/bold]`` is not rich markup, ``$x^2$`` is not mathtext, ``a/../b`` is not a
path, and a name longer than the file system allows becomes a shorter one ending in its
hash.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from typing import Literal

from rich.markup import escape as _rich_escape

Medium = Literal["terminal", "log", "markdown", "html", "plot", "file"]
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps tab and newline
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\`*\[\]<>$~&#])")  # '|' is md_table's: it escapes every cell
# '_' makes emphasis only at a word's edge (CommonMark): count_even stays as it is.
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_NOT_IN_FILE_NAMES = re.compile(r"[^0-9A-Za-z._-]+")


def plain(value: object, medium: Medium = "terminal", *, max_bytes: int = NAME_MAX) -> str:
    """A user-given name as text the medium shows as it is (see the module docstring).

    - ``terminal`` (rich): markup escaped; control characters other than tab and newline
      shown as escapes, so an ANSI sequence in a name cannot restyle or clear the screen;
    - ``log``: every control character shown as an escape (a newline in a name cannot
      forge a log line);
    - ``markdown``: what Markdown reads as syntax backslash-escaped (``md_table`` escapes
      ``|`` in every cell), line breaks as spaces;
    - ``html``: HTML-escaped, quotes too;
    - ``plot``: matplotlib's mathtext ``$`` escaped, control characters as escapes, and a
      leading underscore (which a legend reads as "leave me out") kept visible behind a
      space;
    - ``file``: one file name: letters, digits, ``.``, ``_`` and ``-`` kept, any other run of
      characters as one ``_``, no leading dot, at most ``max_bytes``; a name that had to be
      cleaned or cut ends with 16 hex characters of its hash.
    """
    text = str(value)
    if medium == "terminal":
        return _rich_escape(_show_controls(text, _CONTROL))
    if medium == "log":
        return _show_controls(text, _CONTROL_ALL)
    if medium == "markdown":
        escaped = _MARKDOWN.sub(r"\\\1", " ".join(text.splitlines()))
        escaped = _EDGE_UNDERSCORE.sub(r"\\_", escaped)
        return _show_controls(escaped, _CONTROL_ALL)
    if medium == "html":
        return html.escape(text, quote=True)
    if medium == "plot":
        text = _show_controls(text, _CONTROL).replace("$", r"\$")
        return " " + text if text.startswith("_") else text
    if medium == "file":
        return _file_name(text, max_bytes)
    raise ValueError(f"unknown medium {medium!r}")


def _show_controls(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: repr(m.group())[1:-1], text)


def _file_name(text: str, max_bytes: int) -> str:
    """Kept as written when it is a safe name that fits; otherwise its safe start and a hash
    of the whole, so two names never share a file name by being cut or cleaned alike."""
    name = _NOT_IN_FILE_NAMES.sub("_", text).lstrip(".") or "_"
    if name == text and len(name.encode()) <= max_bytes:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:max(1, max_bytes - 17)]}-{digest}"


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


# A figure as this module writes it: "81.2", "+3.1 [-0.5, 6.0]", "12.5%", "<0.001", "-".
_FIGURE = re.compile(r"^(?:[-+]?[\d.,]+%?(?: \[[-+]?[\d.,]+, [-+]?[\d.,]+\])?|<0\.001|-|n/a.*)$")


def md_data_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table whose text is data (names, ids, model outputs): every cell that is
    not a figure goes through ``plain(..., "markdown")``."""
    def cell(text: str) -> str:
        return text if _FIGURE.match(text) else plain(text, "markdown")

    return md_table([cell(h) for h in header], [[cell(c) for c in row] for row in rows], align)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A bare HTML table, every cell escaped."""
    head = "".join(f"<th>{plain(h, 'html')}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{plain(c, 'html')}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
