"""Render a SeedComparison: tables (Markdown, terminal, HTML) and a plot that show every
seed, not only the mean, so the spread between seeds is as visible as the effect."""

from __future__ import annotations

import html
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.core.formatting import html_table, interval, md_data_table, p_value, percent, plain
from distill.evaluate.metrics import SeedInterval
from distill.evaluate.seeds import GroupPair, SeedComparison, TeacherSummary


def seed_interval(seeds: SeedInterval, *, signed: bool = False) -> str:
    """The mean over seeds with its two-level interval: "81.2 [78.0, 84.1]"."""
    return interval(seeds.mean, seeds.ci_low, seeds.ci_high, signed=signed)


def _seeds(seeds) -> str:
    return ", ".join("?" if seed is None else str(seed) for seed in seeds)


def group_rows(seeds: SeedComparison) -> tuple[list[str], list[list[str]]]:
    """One row a recipe, then one a teacher; with teachers, a column of each recipe's share
    of the best teacher's accuracy."""
    header = ["recipe", "seeds", "n items", "mean accuracy % [95% CI, seeds x items]",
              "each seed %", "min - max %"]
    best = seeds.best_teacher
    if best is not None:
        header.append(f"share of the best teacher ({best.label}) % [95% CI]")
    rows = []
    for summary in seeds.summaries:
        acc = summary.accuracy
        row = [summary.group.label, _seeds(summary.group.seeds), str(summary.n_items),
               seed_interval(acc), each_seed(acc),
               f"{percent(min(acc.per_seed))} - {percent(max(acc.per_seed))}"]
        if best is not None:
            row.append(seed_interval(summary.share) if summary.share else "-")
        rows.append(row)
    for teacher in seeds.teachers:
        rows.append([teacher_label(teacher), "-", str(teacher.n_items),
                     f"{seed_interval(teacher.accuracy)} (items only)", "-", "-",
                     *(["-"] if best is not None else [])])
    return header, rows


def teacher_label(teacher: TeacherSummary) -> str:
    return f"teacher {teacher.label}" + (" (best)" if teacher.best else "")


def pair_rows(seeds: SeedComparison) -> tuple[list[str], list[list[str]]]:
    header = ["comparison", "seed pairs", "mean difference, points [95% CI, seeds x items]",
              "each seed, points", "same sign in every seed", "paired t-test p (seeds)"]
    rows = []
    for pair in seeds.pairs:
        rows.append([f"{pair.b.label} - {pair.a.label}", _pairs(pair),
                     seed_interval(pair.delta, signed=True),
                     each_seed(pair.delta, signed=True),
                     "yes" if pair.same_sign else "no", _p(pair)])
    return header, rows


def each_seed(seeds: SeedInterval, *, signed: bool = False) -> str:
    """Every seed's value in percent: "80.0 / 82.5 / 81.2"."""
    return " / ".join(percent(v, signed=signed) for v in seeds.per_seed)


def _pairs(pair: GroupPair) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}:{b}" for a, b in pair.seeds)


def _p(pair: GroupPair) -> str:
    if len(pair.seeds) < 2:
        return "n/a (one seed)"
    return p_value(pair.t_p)


NOTE = ("Intervals: two-level percentile bootstrap (10,000 resamples): the seeds are "
        "resampled, then the test items (one item resample shared by all seeds), so they "
        "cover training noise as well as the choice of items. With 3 seeds the seed level "
        "can only be resampled 10 ways and the interval runs narrow (86% coverage in "
        "simulation, bench/RESULTS.md); read it with each seed's value.")


TEACHER_NOTE = ("Teachers: evaluated through their engines on the same items, judged by the "
                "same judge; their interval covers the items only (one result each). A "
                "recipe's share of the best teacher is its mean accuracy over seeds divided by "
                "that teacher's, on the items both answered, with the same two-level "
                "bootstrap (one item resample for the recipe and the teacher).")


def notes(seeds: SeedComparison) -> list[str]:
    return [NOTE, TEACHER_NOTE] if seeds.teachers else [NOTE]


def to_markdown(seeds: SeedComparison) -> str:
    parts = ["## Across training seeds", ""]
    for note in notes(seeds):
        parts += [note, ""]
    parts.append(md_data_table(*group_rows(seeds)))
    if seeds.pairs:
        parts += ["", md_data_table(*pair_rows(seeds))]
    return "\n".join(parts) + "\n"


def to_html(seeds: SeedComparison) -> str:
    """A small self-contained block (escaped) for the HTML report."""
    blocks = ["<h2>Across training seeds</h2>",
              *(f"<p>{html.escape(note)}</p>" for note in notes(seeds)),
              html_table(*group_rows(seeds))]
    if seeds.pairs:
        blocks.append(html_table(*pair_rows(seeds)))
    return "\n".join(blocks)


def print_seeds(seeds: SeedComparison, console: Console) -> None:
    for title, (header, rows) in (("across training seeds", group_rows(seeds)),
                                  ("differences across seeds", pair_rows(seeds))):
        if not rows:
            continue
        table = Table(title=title)
        for index, name in enumerate(header):
            table.add_column(plain(name), justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*map(plain, row))
        console.print(table)


def plot_seeds(seeds: SeedComparison, path: Path) -> None:
    """One column per recipe: every seed's accuracy as a dot (right), the mean with its
    two-level interval beside them (left), never on a seed's dot; each teacher a
    horizontal reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    summaries = seeds.summaries
    figure, axes = plt.subplots(figsize=(max(5.0, 1.6 * len(summaries) + 1.5), 4.5))
    for index, summary in enumerate(summaries):
        acc = summary.accuracy
        axes.bar(index, acc.mean, 0.7, alpha=0.25, color="tab:blue")
        axes.errorbar(index - 0.18, acc.mean, yerr=[[acc.mean - acc.ci_low],
                                                    [acc.ci_high - acc.mean]],
                      fmt="D", color="tab:blue", capsize=4, markersize=5, zorder=3,
                      label="mean [95% CI, seeds x items]" if index == 0 else None)
        spread = (np.linspace(0.02, 0.26, len(acc.per_seed)) if len(acc.per_seed) > 1
                  else np.array([0.1]))
        axes.scatter(index + spread, acc.per_seed, color="black", zorder=3, s=18,
                     label="each seed" if index == 0 else None)
        for x, value, seed in zip(spread, acc.per_seed, summary.group.seeds, strict=True):
            axes.annotate(str(seed), (index + x, value), textcoords="offset points",
                          xytext=(4, 2), fontsize=7)
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for number, teacher in enumerate(seeds.teachers):
        axes.axhline(teacher.accuracy.mean, color="tab:red" if teacher.best else "tab:gray",
                     linestyle=styles[number % len(styles)], linewidth=1.2, zorder=2,
                     label=plain(f"{teacher_label(teacher)} {percent(teacher.accuracy.mean)}%",
                               "plot"))
    axes.set_xticks(range(len(summaries)), [plain(s.group.label, "plot") for s in summaries],
                    rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy")
    axes.set_title("accuracy over training seeds" + (" beside the teachers"
                                                     if seeds.teachers else ""))
    axes.legend(fontsize="small", loc="lower left", framealpha=0.9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
