"""Render a SeedComparison: tables (Markdown, terminal, HTML) and a plot that show every
seed, not only the mean, so the spread between seeds is as visible as the effect."""

from __future__ import annotations

import html
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.evaluate.markdown import md_table
from distill.evaluate.metrics import SeedInterval
from distill.evaluate.seeds import GroupPair, SeedComparison


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def _interval(interval: SeedInterval, fmt=pct) -> str:
    return f"{fmt(interval.mean)} [{fmt(interval.ci_low)}, {fmt(interval.ci_high)}]"


def _seeds(seeds) -> str:
    return ", ".join("?" if seed is None else str(seed) for seed in seeds)


def group_rows(seeds: SeedComparison) -> tuple[list[str], list[list[str]]]:
    header = ["recipe", "seeds", "n items", "mean accuracy % [95% CI, seeds x items]",
              "each seed %", "min - max %"]
    rows = []
    for summary in seeds.summaries:
        acc = summary.accuracy
        rows.append([summary.group.label, _seeds(summary.group.seeds), str(summary.n_items),
                     _interval(acc), " / ".join(pct(v) for v in acc.per_seed),
                     f"{pct(min(acc.per_seed))} - {pct(max(acc.per_seed))}"])
    return header, rows


def pair_rows(seeds: SeedComparison) -> tuple[list[str], list[list[str]]]:
    header = ["comparison", "seed pairs", "mean difference, points [95% CI, seeds x items]",
              "each seed, points", "same sign in every seed", "paired t-test p (seeds)"]
    rows = []
    for pair in seeds.pairs:
        rows.append([f"{pair.b.label} - {pair.a.label}", _pairs(pair),
                     _interval(pair.delta, signed),
                     " / ".join(signed(v) for v in pair.delta.per_seed),
                     "yes" if pair.same_sign else "no", _p(pair)])
    return header, rows


def _pairs(pair: GroupPair) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}:{b}" for a, b in pair.seeds)


def _p(pair: GroupPair) -> str:
    if len(pair.seeds) < 2:
        return "n/a (one seed)"
    return f"{pair.t_p:.3g}" if pair.t_p >= 0.001 else "<0.001"


NOTE = ("Intervals: two-level percentile bootstrap (10,000 resamples): the seeds are "
        "resampled, then the test items (one item resample shared by all seeds), so they "
        "cover training noise as well as the choice of items. With 3 seeds the seed level "
        "can only be resampled 10 ways and the interval runs narrow (86% coverage in "
        "simulation, bench/RESULTS.md); read it with each seed's value.")


def to_markdown(seeds: SeedComparison) -> str:
    parts = ["## Across training seeds", "", NOTE, "", md_table(*group_rows(seeds))]
    if seeds.pairs:
        parts += ["", md_table(*pair_rows(seeds))]
    return "\n".join(parts) + "\n"


def to_html(seeds: SeedComparison) -> str:
    """A small self-contained block (escaped) for the HTML report."""
    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    blocks = ["<h2>Across training seeds</h2>", f"<p>{html.escape(NOTE)}</p>",
              table(*group_rows(seeds))]
    if seeds.pairs:
        blocks.append(table(*pair_rows(seeds)))
    return "\n".join(blocks)


def print_seeds(seeds: SeedComparison, console: Console) -> None:
    for title, (header, rows) in (("across training seeds", group_rows(seeds)),
                                  ("differences across seeds", pair_rows(seeds))):
        if not rows:
            continue
        table = Table(title=title)
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def plot_seeds(seeds: SeedComparison, path: Path) -> None:
    """One column per recipe: every seed's accuracy as a dot, the mean as a bar with its
    two-level interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    summaries = seeds.summaries
    figure, axes = plt.subplots(figsize=(max(5.0, 1.6 * len(summaries)), 4.5))
    for index, summary in enumerate(summaries):
        acc = summary.accuracy
        axes.bar(index, acc.mean, 0.6, alpha=0.35, yerr=[[acc.mean - acc.ci_low],
                                                         [acc.ci_high - acc.mean]], capsize=4)
        spread = np.linspace(-0.15, 0.15, len(acc.per_seed)) if len(acc.per_seed) > 1 else [0]
        axes.scatter(index + np.asarray(spread), acc.per_seed, color="black", zorder=3, s=18)
        for x, value, seed in zip(spread, acc.per_seed, summary.group.seeds, strict=True):
            axes.annotate(str(seed), (index + x, value), textcoords="offset points",
                          xytext=(4, 2), fontsize=7)
    axes.set_xticks(range(len(summaries)), [s.group.label for s in summaries], rotation=20,
                    ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy: each seed (dots), mean [95% CI]")
    axes.set_title("accuracy over training seeds")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
