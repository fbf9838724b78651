"""distill.core.formatting: one way to write a figure, an interval, a share or a table."""

from __future__ import annotations

import pytest

from distill.core.formatting import (
    accuracy_interval,
    html_table,
    interval,
    md_table,
    p_value,
    percent,
    share,
)


@pytest.mark.parametrize(("value", "signed", "text"), [
    (0.8125, False, "81.2"), (1.0, False, "100.0"), (0.0, False, "0.0"),
    (0.05, True, "+5.0"), (-0.125, True, "-12.5"), (0.0, True, "+0.0"),
])
def test_percent_has_one_decimal_and_a_sign_only_when_asked(value, signed, text) -> None:
    assert percent(value, signed=signed) == text


def test_intervals_read_the_same_everywhere() -> None:
    assert interval(0.8125, 0.78, 0.841) == "81.2 [78.0, 84.1]"
    assert interval(0.02, -0.01, 0.05, signed=True) == "+2.0 [-1.0, +5.0]"
    assert interval(0.5, 0.4, 0.6, unit="%") == "50.0% [40.0, 60.0]"
    metrics = {"accuracy": 0.75, "accuracy_ci_low": 0.625, "accuracy_ci_high": 0.875, "n": 8}
    assert accuracy_interval(metrics) == "75.0 [62.5, 87.5]"
    assert accuracy_interval(metrics, unit="%") == "75.0% [62.5, 87.5]"


def test_shares_and_p_values() -> None:
    assert share(1, 8) == "12.5%"
    assert share(0, 0) == "-"  # nothing to take a share of
    assert share(2, 3) == "66.7%"
    assert p_value(0.04567) == "0.0457"
    assert p_value(0.001) == "0.001"
    assert p_value(0.0009) == "<0.001"


def test_markdown_tables_escape_their_cells_and_align_columns() -> None:
    table = md_table(["model", "accuracy %"], [["a|b", "81.2"], ["two\nlines", "9.0"]])
    assert table.splitlines() == ["| model | accuracy % |", "|---|---|",
                                  "| a\\|b | 81.2 |", "| two lines | 9.0 |"]
    aligned = md_table(["", "traces"], [["kept", "3 (75.0%)"]], "lr")
    assert aligned.splitlines() == ["| | traces |", "|---|---:|", "| kept | 3 (75.0%) |"]
    assert md_table(["a", "b"], []) == "| a | b |\n|---|---|"


def test_html_tables_escape_every_cell() -> None:
    table = html_table(["<b>"], [["a & b"], ["<script>"]])
    assert table == ("<table><thead><tr><th>&lt;b&gt;</th></tr></thead><tbody>"
                     "<tr><td>a &amp; b</td></tr><tr><td>&lt;script&gt;</td></tr></tbody></table>")
