"""The per-run report: counts, why traces were dropped, length histograms, per-teacher
accuracy. Markdown for people, stats.json for tools, PNG plots (matplotlib, Agg).

Statistics are accumulated in fixed bins while traces stream by, so the report costs no
memory per trace.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from distill.core.answers import REASONS
from distill.core.formatting import md_table, plain, share
from distill.schemas import DatasetManifest

KEPT_BY_TEACHER = "kept_by_teacher:"  # manifest counts: a version's rows by teacher


def kept_by_teacher(manifest: DatasetManifest) -> dict[str, int]:
    """A version's rows by the teacher that wrote them (its parents' rows included), from
    its manifest; empty for a version published before these counts were recorded."""
    return {key.removeprefix(KEPT_BY_TEACHER): n for key, n in manifest.counts.items()
            if key.startswith(KEPT_BY_TEACHER)}


# log-spaced length bins: 1, 1.41, 2, ... 2**20 tokens
LENGTH_EDGES = np.concatenate(([0.0], 2.0 ** (np.arange(0, 41) / 2.0)))


class RunStats:
    def __init__(self) -> None:
        self.verdicts: Counter = Counter()
        self.correctness: Counter = Counter()
        self.answer_reasons: Counter = Counter()  # "wrong/near_miss", "unparseable/hedged"
        self.primary_reasons: Counter = Counter()
        self.all_reasons: Counter = Counter()
        self.teachers: dict[str, Counter] = defaultdict(Counter)
        self.categories: dict[str, Counter] = defaultdict(Counter)
        self.lengths: dict[str, dict[str, np.ndarray]] = defaultdict(
            lambda: {"keep": np.zeros(len(LENGTH_EDGES), np.int64),
                     "drop": np.zeros(len(LENGTH_EDGES), np.int64)})
        self.duplicates: Counter = Counter()
        self.rejects: Counter = Counter()
        self.generate_rejects: Counter = Counter()
        self.label_traces: dict[str, Counter] = defaultdict(Counter)  # source -> verdicts
        self.kept_items: Counter = Counter()  # label source -> items with a kept trace
        self.items: Counter = Counter()  # label source -> items (all scored items)
        self.unlabeled: Counter = Counter()  # why -> items without gold or derived label
        self.unlabeled_examples: list[dict] = []
        self.judge: Counter = Counter()  # judge_status (+ ':' reason) -> traces

    def add(self, row: dict, verdict: str, reasons: list[str]) -> None:
        signals = row["signals"]
        self.verdicts[verdict] += 1
        self.correctness[signals["correctness"]] += 1
        # Items without gold: only outputs with no answer of the asked type count here
        # ('no_gold/truncated'); an answer read on such an item ('no_gold') is neither.
        if signals["correctness"] != "correct" and signals.get("answer_reason") != "no_gold":
            self.answer_reasons[f"{signals['correctness']}/{signals.get('answer_reason')}"] += 1
        teacher = self.teachers[row["teacher_id"]]
        teacher["traces"] += 1
        teacher[signals["correctness"]] += 1
        teacher[verdict] += 1
        self.categories[row["category"]][verdict] += 1
        self.label_traces[str(signals.get("label_source", "gold"))][verdict] += 1
        status = str(signals.get("judge_status", "not_judged"))
        self.judge[status if status != "rejected" else f"rejected:{signals['judge_reason']}"] += 1
        if reasons:
            self.primary_reasons[reasons[0]] += 1
            self.all_reasons.update(reasons)
        length = float(signals["length_tokens"])
        bin_index = int(np.searchsorted(LENGTH_EDGES, length, side="right")) - 1
        self.lengths[row["category"]][verdict][max(bin_index, 0)] += 1

    def add_labels(self, summary: dict) -> None:
        """A scored shard's item counts by label source and its unlabeled items."""
        labels = summary.get("labels", {})
        self.items.update(labels.get("items", {}))
        self.unlabeled.update(labels.get("unlabeled", {}))
        room = 50 - len(self.unlabeled_examples)
        self.unlabeled_examples += labels.get("examples", [])[:max(0, room)]

    def to_dict(self) -> dict:
        return {
            "labels": {"items": dict(self.items), "kept_items": dict(self.kept_items),
                       "traces": {k: dict(v) for k, v in sorted(self.label_traces.items())},
                       "unlabeled": dict(self.unlabeled),
                       "unlabeled_examples": self.unlabeled_examples},
            "judge": dict(self.judge),
            "verdicts": dict(self.verdicts),
            "correctness": dict(self.correctness),
            "answer_reasons": dict(self.answer_reasons.most_common()),
            "drop_reasons": dict(self.primary_reasons.most_common()),
            "rule_failures": dict(self.all_reasons.most_common()),
            "teachers": {t: dict(c) for t, c in sorted(self.teachers.items())},
            "categories": {c: dict(n) for c, n in sorted(self.categories.items())},
            "length_edges": LENGTH_EDGES.tolist(),
            "length_histograms": {c: {v: h.tolist() for v, h in hists.items()}
                                  for c, hists in sorted(self.lengths.items())},
            "rejected": dict(self.rejects),
            "generate_rejects": dict(self.generate_rejects),
        }


def write_report(folder: Path, manifest: DatasetManifest, stats: RunStats,
                 notes: list[str] | None = None, *, trace_dir: Path | None = None) -> Path:
    """report.md, stats.json and the plots into ``folder``; returns the Markdown path.
    ``trace_dir``: the input folder as people should read it (the manifest holds it
    relative to the version's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = stats.to_dict()
    (folder / "stats.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")
    plots = _plots(folder, stats)
    path = folder / "report.md"
    path.write_text(_markdown(manifest, stats, plots, notes or [],
                              str(trace_dir or manifest.trace_dir)), encoding="utf-8")
    for written in folder.iterdir():  # published with the version: make it durable too
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
    return path


def _answer_reasons(stats: RunStats, total: int, trace_dir: str) -> list[str]:
    """Wrong and unparseable traces by the judge's reason: a teacher whose format is
    misread shows up here as a large 'no_answer' or 'not_a_number' row."""
    if not stats.answer_reasons:
        return []
    rows = [[f"`{key}`", f"{n:,}", share(n, total), REASONS.get(key.partition("/")[2], "")]
            for key, n in stats.answer_reasons.most_common()]
    return ["Wrong and unparseable answers by the judge's reason (examples: "
            f"distill answers {plain(trace_dir, 'markdown')}):", "",
            md_table(["verdict / reason", "traces", "share", "meaning"], rows, "lrrl"), ""]


def _markdown(manifest: DatasetManifest, stats: RunStats, plots: list[str],
              notes: list[str], trace_dir: str) -> str:
    counts = manifest.counts
    keep, drop = stats.verdicts["keep"], stats.verdicts["drop"]
    total = keep + drop
    lines = [
        f"# Filter report: dataset version `{manifest.version[:16]}`",
        "",
        f"- version: `{manifest.version}`",
        f"- parent: `{manifest.parent}`" if manifest.parent else "- parent: none",
        f"- policy: {plain(manifest.policy.get('name'), 'markdown')} "
        f"(`{manifest.policy_hash[:16]}`)",
        f"- input: {plain(trace_dir, 'markdown')} ({len(manifest.inputs)} trace shards)",
        f"- eval sets: {plain(', '.join(manifest.eval_sets) or 'none', 'markdown')}",
        "",
        "## Counts",
        "",
        md_table(["", "traces"], [
            ["input traces scored", f"{total:,}"],
            ["kept from this input", f"{keep:,} ({share(keep, total)})"],
            ["dropped", f"{drop:,} ({share(drop, total)})"],
            ["kept from the parent version", f"{counts.get('kept_parent', 0):,}"],
            ["rows in this version", f"{counts.get('kept', 0):,}"],
            ["input lines rejected (unreadable)", f"{sum(stats.rejects.values()):,}"],
            ["rejected earlier by generate", f"{sum(stats.generate_rejects.values()):,}"],
            ["duplicate groups", f"{counts.get('duplicate_groups', 0):,}"],
        ], "lr"),
        "",
        "Correctness of the input traces: " + ", ".join(
            f"{k} {v:,} ({share(v, total)})" for k, v in sorted(stats.correctness.items())),
        "",
        *_answer_reasons(stats, total, trace_dir),
        "## Why traces were dropped",
        "",
        "First reason of each dropped trace (rules in policy order, then contamination, "
        "duplicates, the per-item cap):",
        "",
        md_table(["reason", "traces", "share of input"],
                 [[f"`{reason}`", f"{n:,}", share(n, total)]
                  for reason, n in stats.primary_reasons.most_common()], "lrr"),
        "", "Every failed check (a trace can fail several):", "",
        md_table(["check", "traces"], [[f"`{reason}`", f"{n:,}"]
                                        for reason, n in stats.all_reasons.most_common()], "lr"),
    ]
    if stats.rejects or stats.generate_rejects:
        lines += ["", "Rejected lines by reason: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted((stats.rejects + stats.generate_rejects).items()))]
    lines += _label_lines(stats)
    lines += _source_lines(manifest, stats)
    lines += ["", "## Teachers", "",
              "Accuracy is against gold, so only over items that have one.", "",
              _teacher_table(stats)]
    lines += ["", "## Categories", "",
              md_table(["category", "kept", "dropped"],
                       [[plain(category, "markdown"), f"{c['keep']:,}", f"{c['drop']:,}"]
                        for category, c in sorted(stats.categories.items())], "lrr")]
    lines += ["", "## Lengths (tokens)", "",
              md_table(["category", "kept median", "dropped median"],
                       [[plain(category, "markdown"), _median(hists["keep"]),
                         _median(hists["drop"])]
                        for category, hists in sorted(stats.lengths.items())], "lrr")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _source_lines(manifest: DatasetManifest, stats: RunStats) -> list[str]:
    """The version's rows by the teacher that wrote them, split into the parent's rows and
    this input's: in a later round, how much of the data the student wrote."""
    total = manifest.counts.get("kept", 0)
    by_teacher = kept_by_teacher(manifest)
    if not by_teacher or not total:
        return []
    rows = []
    for teacher, n in sorted(by_teacher.items(), key=lambda item: -item[1]):
        own = stats.teachers.get(teacher, Counter())["keep"]
        rows.append([f"`{teacher}`", f"{n - own:,}", f"{own:,}", f"{n:,}", share(n, total)])
    unknown = total - sum(by_teacher.values())
    if unknown > 0:
        rows.append(["(the parent's rows by teacher are not recorded)", f"{unknown:,}", "0",
                     f"{unknown:,}", share(unknown, total)])
    return ["", "## Sources of this version's rows", "",
            md_table(["teacher", "from the parent version", "from this input", "rows",
                      "share of the version"], rows, "lrrrr")]


def _label_lines(stats: RunStats) -> list[str]:
    """Which labels are gold and which derived, and the items left without any."""
    derived = stats.items["consensus"] + stats.items["judge"]
    lines = ["", "## Labels: gold or derived", "",
             f"Items by where their label comes from ({derived:,} derived from the teachers, "
             "never checked against a gold answer):", "",
             _label_table(stats)]
    if stats.unlabeled:
        why = {"no_traces": "no trace at all (every teacher failed: see the generate rejects)",
               "no_answer": "no teacher gave an answer of the asked type",
               "tie": "the teachers' answers tie and nothing breaks the tie"}
        lines += ["", f"**{sum(stats.unlabeled.values()):,} item(s) have neither a gold "
                  "answer nor a derived label**; none of their traces is kept:", ""]
        lines += [f"- {why.get(k, k)}: {n:,}" for k, n in sorted(stats.unlabeled.items())]
        examples = ", ".join(f"{plain(e['sample_id'], 'markdown')} ({e['why']})"
                             for e in stats.unlabeled_examples[:20])
        lines += ["", f"First of them: {examples}"]
    if any(k != "not_judged" for k in stats.judge):
        lines += ["", "Judge: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.judge.items()))]
    return lines


def _teacher_table(stats: RunStats) -> str:
    counts = ("traces", "correct", "wrong", "unparseable", "no_gold")
    rows = [[plain(teacher, "markdown"), *(f"{c[k]:,}" for k in counts),
             share(c["correct"], c["traces"] - c["no_gold"]), f"{c['keep']:,}"]
            for teacher, c in sorted(stats.teachers.items())]
    return md_table(["teacher", "traces", "correct", "wrong", "unparseable", "no gold",
                     "accuracy", "kept"], rows, "lrrrrrrr")


def _label_table(stats: RunStats) -> str:
    rows = []
    for source in ("gold", "consensus", "judge", "none"):
        traces = stats.label_traces.get(source, Counter())
        if stats.items[source] or traces:
            rows.append([source, f"{stats.items[source]:,}", f"{stats.kept_items[source]:,}",
                         f"{traces['keep']:,}", f"{traces['drop']:,}"])
    return md_table(["label source", "items", "items with a kept trace", "traces kept",
                     "traces dropped"], rows, "lrrrr")


def _median(hist: np.ndarray) -> str:
    total = int(hist.sum())
    if total == 0:
        return "-"
    index = int(np.searchsorted(np.cumsum(hist), (total + 1) / 2))
    return f"~{LENGTH_EDGES[index]:.0f}"


def _plots(folder: Path, stats: RunStats) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if stats.lengths:
        categories = sorted(stats.lengths)
        fig, axes = plt.subplots(len(categories), 1, figsize=(7, 2.2 * len(categories)),
                                 squeeze=False)
        centers = np.arange(len(LENGTH_EDGES))
        for ax, category in zip(axes[:, 0], categories, strict=True):
            hists = stats.lengths[category]
            ax.bar(centers, hists["keep"], color="tab:green", label="kept")
            ax.bar(centers, hists["drop"], bottom=hists["keep"], color="tab:red",
                   label="dropped", alpha=0.7)
            ax.set_title(plain(category, "plot"), fontsize=9)
            ticks = centers[::4]
            ax.set_xticks(ticks, [f"{LENGTH_EDGES[t]:.0f}" for t in ticks], fontsize=7)
            ax.set_ylabel("traces", fontsize=8)
        axes[0, 0].legend(fontsize=8)
        axes[-1, 0].set_xlabel("length (tokens, log bins)")
        fig.tight_layout()
        fig.savefig(folder / "lengths.png", dpi=90)
        plt.close(fig)
        written.append("lengths.png")
    if stats.primary_reasons:
        reasons = stats.primary_reasons.most_common(20)
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(reasons) + 1))
        ax.barh([r for r, _ in reasons][::-1], [n for _, n in reasons][::-1], color="tab:red")
        ax.set_xlabel("dropped traces (first reason)")
        fig.tight_layout()
        fig.savefig(folder / "drop_reasons.png", dpi=90)
        plt.close(fig)
        written.append("drop_reasons.png")
    if stats.teachers:
        teachers = sorted(stats.teachers)
        accuracy = [stats.teachers[t]["correct"]
                    / max(1, stats.teachers[t]["traces"] - stats.teachers[t]["no_gold"])
                    for t in teachers]
        kept = [stats.teachers[t]["keep"] / max(1, stats.teachers[t]["traces"])
                for t in teachers]
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(teachers)), 3))
        x = np.arange(len(teachers))
        ax.bar(x - 0.2, accuracy, 0.4, label="accuracy", color="tab:blue")
        ax.bar(x + 0.2, kept, 0.4, label="kept share", color="tab:green")
        ax.set_xticks(x, [plain(t, "plot") for t in teachers], rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "teachers.png", dpi=90)
        plt.close(fig)
        written.append("teachers.png")
    return written
