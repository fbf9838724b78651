"""Render a Comparison: a Markdown report, rich tables on the terminal, a PNG plot of
accuracy per category with intervals, and a self-contained HTML page of flipped items
(images embedded as data URLs, every model output HTML-escaped)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.core.errors import DistillError
from distill.core.evalsets import EvalSet, load_eval_set
from distill.core.formatting import (
    accuracy_interval,
    interval,
    md_data_table,
    p_value,
    percent,
)
from distill.core.images import decode_image, read_image_bytes
from distill.core.progress import plain
from distill.core.shards import write_bytes_atomic
from distill.core.templates import sandboxed_environment
from distill.evaluate import seed_report
from distill.evaluate.agreement import HarnessAgreement, harness_agreement
from distill.evaluate.compare import Comparison, Flip, LoadedResult, PairReport
from distill.evaluate.results import spec_candidates
from distill.evaluate.seeds import SeedComparison
from distill.schemas import EvalResult

DEFAULT_MAX_FLIPS = 200


def _category_accuracy(result: EvalResult, category: str) -> str:
    block = result.per_category.get(category)
    return percent(block["accuracy"]) if block else "-"


# --- Markdown ---------------------------------------------------------------------------------


def summary_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The accuracy table as header + rows of strings (shared by Markdown and rich)."""
    header = ["model", "eval set", "n", "accuracy % (95% CI)", "unparseable %",
              "mean tokens", "reasoning words", "tokens/s", *comparison.categories]
    rows = []
    for loaded, role in ([(r, "") for r in comparison.results]
                         + [(t, "teacher ") for t in comparison.teachers]):
        metrics = loaded.result.metrics
        rows.append([
            role + loaded.label, loaded.eval_set_name, f"{int(metrics['n'])}",
            accuracy_interval(metrics), percent(metrics["unparseable_rate"]),
            f"{metrics['mean_output_tokens']:.1f}",
            f"{metrics['mean_reasoning_words']:.1f}", f"{metrics['tokens_per_s']:.1f}",
            *[_category_accuracy(loaded.result, category) for category in comparison.categories],
        ])
    return header, rows


def delta_rows(pair: PairReport) -> tuple[list[str], list[list[str]]]:
    header = ["category", "n", pair.a.label, pair.b.label, "delta (95% CI)", "right->wrong",
              "wrong->right", "McNemar p"]
    rows = []
    for name, stats in [("all", pair.overall), *pair.per_category.items()]:
        rows.append([
            name, str(stats.n), percent(stats.accuracy_a), percent(stats.accuracy_b),
            interval(stats.delta, stats.delta_ci_low, stats.delta_ci_high, signed=True),
            str(stats.right_to_wrong), str(stats.wrong_to_right), p_value(stats.mcnemar_p),
        ])
    return header, rows


def _short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return "(none)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_markdown(comparison: Comparison, *, max_flips: int = DEFAULT_MAX_FLIPS) -> str:
    parts = ["# Eval comparison", "", "Accuracy in %, 95% percentile-bootstrap intervals "
             "(10,000 resamples); per-category columns are accuracy %.", "",
             md_data_table(*summary_rows(comparison))]
    for pair in comparison.pairs:
        parts += ["", f"## {plain(pair.b.label, 'markdown')} vs "
                  f"{plain(pair.a.label, 'markdown')}", ""]
        if not pair.same_eval_set:
            parts += [f"Different eval sets: paired on {pair.overall.n} shared items "
                      f"({pair.only_in_a} only in the baseline, {pair.only_in_b} only in "
                      f"the other, {pair.mismatched} with different gold answers).", ""]
        parts += [md_data_table(*delta_rows(pair)), ""]
        parts += [f"Paired bootstrap p = {p_value(pair.overall.bootstrap_p)}; "
                  f"McNemar exact p = {p_value(pair.overall.mcnemar_p)}. "
                  f"Identical outputs on {pair.same_output} of {pair.overall.n} items.", ""]
        for direction, title in (("right_to_wrong", "right -> wrong"),
                                 ("wrong_to_right", "wrong -> right")):
            flips = pair.flips_of(direction)  # type: ignore[arg-type]
            parts += [f"### Flipped {title} ({len(flips)})", ""]
            if flips:
                rows = [[flip.sample_id, flip.before.category, flip.before.gold,
                         _short(flip.before.extracted), _short(flip.after.extracted)]
                        for flip in flips[:max_flips]]
                parts.append(md_data_table(["sample", "category", "gold", f"{pair.a.label} answer",
                                  f"{pair.b.label} answer"], rows))
                if len(flips) > max_flips:
                    parts.append(f"\n({len(flips) - max_flips} more not shown)")
                parts.append("")
    for agreement in agreements(comparison):
        parts += ["", f"## {plain(agreement_title(agreement), 'markdown')}", "",
                  plain(agreement_summary(agreement), "markdown"), ""]
        if agreement.disagreements:
            parts.append(md_data_table(*agreement_rows(agreement, max_flips)))
            hidden = len(agreement.disagreements) - max_flips
            if hidden > 0:
                parts.append(f"\n({hidden} more not shown)")
    return "\n".join(parts).rstrip() + "\n"


# --- another harness against our judge ----------------------------------------------------------


def agreements(comparison: Comparison) -> list[HarnessAgreement]:
    """One per imported result (distill eval import) whose items keep the harness's score."""
    found = (harness_agreement(loaded) for loaded in comparison.results)
    return [agreement for agreement in found if agreement is not None]


def agreement_title(agreement: HarnessAgreement) -> str:
    return f"{agreement.loaded.label}: {agreement.harness} vs our judge"


def agreement_summary(agreement: HarnessAgreement) -> str:
    text = (f"Same outputs, two judges: {agreement.harness}'s per-item score"
            + (f" ({agreement.metric})" if agreement.metric else "")
            + f" and ours agree on {agreement.agree} of {agreement.scored} items and disagree "
              f"on {len(agreement.disagreements)}.")
    if agreement.unscored:
        text += f" {agreement.unscored} item(s) have no per-item harness score."
    return text


def agreement_rows(agreement: HarnessAgreement,
                   limit: int = DEFAULT_MAX_FLIPS) -> tuple[list[str], list[list[str]]]:
    header = ["sample", "category", "gold", "our verdict", "our answer", "harness score",
              "harness answer", "reason"]
    rows = [[d.item.sample_id, d.item.category, d.item.gold, d.item.correctness,
             _short(d.item.extracted, 30), f"{d.item.harness.score:g}",  # type: ignore[union-attr]
             _short(d.item.harness.extracted, 30), d.reason]  # type: ignore[union-attr]
            for d in agreement.disagreements[:limit]]
    return header, rows


# --- terminal -----------------------------------------------------------------------------------


def print_comparison(comparison: Comparison, console: Console) -> None:
    header, rows = summary_rows(comparison)
    table = Table(title="accuracy % (95% CI)")
    for index, name in enumerate(header):
        table.add_column(plain(name), justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*map(plain, row))
    console.print(table)
    for pair in comparison.pairs:
        header, rows = delta_rows(pair)
        table = Table(title=f"{plain(pair.b.label)} vs {plain(pair.a.label)}")
        for index, name in enumerate(header):
            table.add_column(plain(name), justify="left" if index == 0 else "right")
        for row in rows:
            style = None
            if row[4].startswith("+") and not row[4].startswith("+0.0 "):
                style = "green"
            elif row[4].startswith("-"):
                style = "red"
            table.add_row(*map(plain, row), style=style)
        console.print(table)
        console.print(f"flipped: {pair.overall.right_to_wrong} right->wrong, "
                      f"{pair.overall.wrong_to_right} wrong->right "
                      f"(McNemar exact p = {p_value(pair.overall.mcnemar_p)}); identical "
                      f"outputs on {pair.same_output} of {pair.overall.n} items")
    for agreement in agreements(comparison):
        console.print(f"[bold]{plain(agreement_title(agreement))}[/]: "
                      f"{plain(agreement_summary(agreement))}")
        if agreement.disagreements:
            header, rows = agreement_rows(agreement)
            table = Table(title="where they disagree")
            for name in header:
                table.add_column(plain(name))
            for row in rows:
                table.add_row(*map(plain, row))
            console.print(table)


# --- plot ---------------------------------------------------------------------------------------


def plot_accuracy(comparison: Comparison, path: Path) -> None:
    """Grouped bars: accuracy per category (and overall) for every result, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = ["all", *comparison.categories]
    count = len(comparison.results)
    width = 0.8 / count
    x = np.arange(len(groups))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, count / 2)), 4.5))
    for index, loaded in enumerate(comparison.results):
        values, lows, highs = [], [], []
        for group in groups:
            if group == "all":
                metrics = loaded.result.metrics
                block = {"accuracy": metrics["accuracy"], "ci_low": metrics["accuracy_ci_low"],
                         "ci_high": metrics["accuracy_ci_high"]}
            else:
                block = loaded.result.per_category.get(group)
            if block is None:
                values.append(np.nan)
                lows.append(0.0)
                highs.append(0.0)
                continue
            values.append(block["accuracy"])
            lows.append(block["accuracy"] - block["ci_low"])
            highs.append(block["ci_high"] - block["accuracy"])
        axes.bar(x + (index - (count - 1) / 2) * width, values, width, yerr=[lows, highs],
                 capsize=3, label=plain(loaded.label, "plot"))
    styles = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    best = max(comparison.teachers, key=lambda t: t.result.metrics["accuracy"], default=None)
    for number, teacher in enumerate(comparison.teachers):  # a reference line per group
        for position, group in enumerate(groups):
            block = (teacher.result.metrics if group == "all"
                     else teacher.result.per_category.get(group))
            if block is not None:
                axes.hlines(block["accuracy"], position - 0.45, position + 0.45,
                            colors="tab:red" if teacher is best else "tab:gray",
                            linestyles=styles[number % len(styles)], linewidth=1.4, zorder=4,
                            label=plain(f"teacher {teacher.label}", "plot") if position == 0
                            else None)
    count += len(comparison.teachers)
    axes.set_xticks(x, [plain(group, "plot") for group in groups], rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy (95% CI)")
    axes.set_title("accuracy per category")
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22),
                ncol=min(count, 3), frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- HTML ---------------------------------------------------------------------------------------


class ImageLookup:
    """Finds a result's eval set (its spec, absolute or relative to the result file) to
    show questions and images; a missing eval set only costs the pictures."""

    def __init__(self) -> None:
        self._sets: dict[str, EvalSet | str] = {}  # by the places its spec may point to

    def eval_set(self, loaded: LoadedResult) -> EvalSet | str:
        spec = loaded.result.eval_set
        candidates = spec_candidates(loaded.path, spec)
        key = "\0".join(candidates)  # a relative spec depends on the result's folder
        if key not in self._sets:
            found: EvalSet | str = f"eval set {spec} is not available"
            for candidate in candidates:
                try:
                    found = load_eval_set(candidate, verify=False)
                    break
                except DistillError as exc:
                    found = f"eval set not available: {exc}"
            self._sets[key] = found
        return self._sets[key]

    def item(self, loaded: LoadedResult, sample_id: str) -> dict[str, str | None]:
        found = self.eval_set(loaded)
        if isinstance(found, str):
            return {"question": None, "image": None, "note": found}
        sample = found.by_id.get(sample_id)
        if sample is None:
            return {"question": None, "image": None, "note": "item not in the eval set now"}
        try:
            data = read_image_bytes(sample.image, found.image_root)
        except DistillError as exc:
            return {"question": sample.question, "image": None, "note": str(exc)}
        choices = None
        if sample.choices:
            choices = [f"{chr(65 + i)}. {text}" for i, text in enumerate(sample.choices)]
        return {"question": sample.question, "image": _data_url(data), "note": None,
                "choices": choices}  # type: ignore[dict-item]


# Images larger than this (bytes or pixels a side) are shrunk for the page: hundreds of
# flipped MathVista-sized images would otherwise make a page of hundreds of megabytes.
MAX_EMBED_BYTES = 150_000
MAX_EMBED_SIDE = 512


def _data_url(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        mime = Image.MIME.get(image.format or "", "application/octet-stream")
        small = len(data) <= MAX_EMBED_BYTES and max(image.size) <= MAX_EMBED_SIDE
    if not small or mime not in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        image = decode_image(data)
        image.thumbnail((MAX_EMBED_SIDE, MAX_EMBED_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# The page's template is the toolkit's own, but every name and text in it comes from users
# and models: it renders escaped, in the same sandbox as every other template.
_ENV = sandboxed_environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_PAGE = _ENV.from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Eval comparison</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.flip { border: 1px solid #bbb; border-radius: 6px; margin: .8em 0; padding: .6em; }
.flip.right_to_wrong { border-left: 6px solid #c0392b; }
.flip.wrong_to_right { border-left: 6px solid #27ae60; }
.flip img { width: 128px; image-rendering: pixelated; border: 1px solid #ddd; float: left;
  margin-right: 1em; }
.outputs { display: flex; gap: 1em; clear: both; padding-top: .5em; }
.output { flex: 1; min-width: 0; }
.output pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6;
  padding: .5em; max-height: 20em; overflow: auto; font-size: 12px; }
.correct { color: #1e8449; font-weight: bold; } .wrong { color: #c0392b; font-weight: bold; }
.unparseable { color: #b9770e; font-weight: bold; } .note { color: #888; }
</style></head><body>
<h1>Eval comparison</h1>
<p>Accuracy in %, 95% percentile-bootstrap intervals (10,000 resamples).</p>
<table><tr>{% for h in summary_header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in summary_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if plot %}<img alt="accuracy per category" src="{{ plot }}" style="max-width: 100%">{% endif %}
{% if seeds_html %}{{ seeds_html | safe }}{% endif %}
{% if seeds_plot %}<img alt="accuracy over training seeds" src="{{ seeds_plot }}"
  style="max-width: 100%">{% endif %}
{% for pair in pairs %}
<h2>{{ pair.title }}</h2>
<table><tr>{% for h in pair.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in pair.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for group in pair.groups %}
<h3 id="{{ group.anchor }}">{{ group.title }} ({{ group.total }})</h3>
{% for flip in group.flips %}
<section class="flip {{ flip.direction }}" data-sample-id="{{ flip.sample_id }}">
{% if flip.image %}<img alt="{{ flip.sample_id }}" src="{{ flip.image }}">{% endif %}
<div><b>{{ flip.sample_id }}</b> &middot; {{ flip.category }} &middot;
gold: <b>{{ flip.gold }}</b></div>
{% if flip.question %}<div class="question">{{ flip.question }}</div>{% endif %}
{% if flip.choices %}<div>{% for c in flip.choices %}{{ c }}<br>{% endfor %}</div>{% endif %}
{% if flip.note %}<div class="note">{{ flip.note }}</div>{% endif %}
<div class="outputs">
{% for out in flip.outputs %}<div class="output"><div>{{ out.label }}:
<span class="{{ out.correctness }}">{{ out.correctness }}</span>, answer
<code>{{ out.extracted }}</code>, {{ out.tokens }} tokens</div><pre>{{ out.raw }}</pre></div>
{% endfor %}</div></section>
{% endfor %}
{% if group.hidden %}<p class="note">{{ group.hidden }} more not shown.</p>{% endif %}
{% endfor %}
{% endfor %}
{% for agreement in agreements %}
<h2>{{ agreement.title }}</h2>
<p>{{ agreement.summary }}</p>
{% if agreement.rows %}<table class="disagreements">
<tr>{% for h in agreement.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in agreement.rows %}<tr data-sample-id="{{ row[0] }}">
{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if agreement.hidden %}<p class="note">{{ agreement.hidden }} more not shown.</p>{% endif %}
{% endfor %}
</body></html>
""")


def _flip_view(flip: Flip, pair: PairReport, images: ImageLookup) -> dict:
    info = images.item(pair.a, flip.sample_id)
    outputs = [
        {"label": loaded.label, "correctness": item.correctness,
         "extracted": item.extracted if item.extracted is not None else "(none)",
         "tokens": item.output_tokens, "raw": item.raw_output}
        for loaded, item in ((pair.a, flip.before), (pair.b, flip.after))
    ]
    return {"direction": flip.direction, "sample_id": flip.sample_id,
            "category": flip.before.category, "gold": flip.before.gold,
            "question": info.get("question"), "choices": info.get("choices"),
            "image": info.get("image"), "note": info.get("note"), "outputs": outputs}


def to_html(comparison: Comparison, *, plot_png: bytes | None = None,
            max_flips: int = DEFAULT_MAX_FLIPS, seeds: SeedComparison | None = None,
            seeds_png: bytes | None = None) -> str:
    images = ImageLookup()
    header, rows = summary_rows(comparison)
    pairs = []
    for index, pair in enumerate(comparison.pairs):
        groups = []
        for direction, title in (("right_to_wrong", "Right → wrong"),
                                 ("wrong_to_right", "Wrong → right")):
            flips = pair.flips_of(direction)  # type: ignore[arg-type]
            groups.append({
                "anchor": f"pair{index}-{direction}", "title": title, "total": len(flips),
                "flips": [_flip_view(flip, pair, images) for flip in flips[:max_flips]],
                "hidden": max(0, len(flips) - max_flips),
            })
        delta_header, delta_table = delta_rows(pair)
        pairs.append({"title": f"{pair.b.label} vs {pair.a.label}", "header": delta_header,
                      "rows": delta_table, "groups": groups})
    plot = _png_url(plot_png)
    views = []
    for agreement in agreements(comparison):
        agreement_header, agreement_table = agreement_rows(agreement, max_flips)
        views.append({"title": agreement_title(agreement),
                      "summary": agreement_summary(agreement), "header": agreement_header,
                      "rows": agreement_table,
                      "hidden": max(0, len(agreement.disagreements) - max_flips)})
    return _PAGE.render(summary_header=header, summary_rows=rows, plot=plot, pairs=pairs,
                        agreements=views, seeds_plot=_png_url(seeds_png),
                        seeds_html=seed_report.to_html(seeds) if seeds else "")


def _png_url(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def write_reports(comparison: Comparison, out: Path, *, max_flips: int = DEFAULT_MAX_FLIPS,
                  seeds: SeedComparison | None = None) -> dict[str, Path]:
    """compare.md, accuracy.png and compare.html under ``out`` (and seeds.png, with the
    seeds' section in both reports, when results are grouped over seeds)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "compare.md", "plot": out / "accuracy.png",
             "html": out / "compare.html"}
    markdown = to_markdown(comparison, max_flips=max_flips)
    seeds_png = None
    if seeds is not None:
        paths["seeds plot"] = out / "seeds.png"
        seed_report.plot_seeds(seeds, paths["seeds plot"])
        seeds_png = paths["seeds plot"].read_bytes()
        title, _, rest = markdown.partition("\n")
        markdown = f"{title}\n\n{seed_report.to_markdown(seeds)}{rest}"
    _write_text(paths["markdown"], markdown)
    plot_accuracy(comparison, paths["plot"])
    html = to_html(comparison, plot_png=paths["plot"].read_bytes(), max_flips=max_flips,
                   seeds=seeds, seeds_png=seeds_png)
    _write_text(paths["html"], html)
    return paths


def _write_text(path: Path, text: str) -> None:
    """Readers see the old page or the new one, never half of it."""
    write_bytes_atomic(path, text.encode("utf-8"))
