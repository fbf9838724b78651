"""Accuracy with confidence intervals, and paired tests for two runs on the same items.

Intervals are percentile bootstrap intervals: ``N_RESAMPLES`` = 10,000 resamples, seed
``SEED`` = 0, level 95%. Because every outcome is 0/1 (an unparseable answer counts as not
correct), the mean of a resample of n items is distributed exactly as Binomial(n, p)/n
(paired differences in {-1, 0, +1}: as a multinomial), so we draw those counts directly:
the same distribution as resampling items, at a fraction of the cost, and reproducible.

Flips between two runs are tested with McNemar's exact test (a two-sided binomial test on
the discordant pairs), which is exact at any sample size; the paired bootstrap gives the
interval of the accuracy difference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from distill.core.answers import parse_output
from distill.schemas import EvalItem, EvalResult

N_RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95


def bootstrap_accuracy_ci(correct: int, n: int, *, n_resamples: int = N_RESAMPLES,
                          seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy of ``correct`` out of ``n``."""
    if n <= 0:
        raise ValueError("an accuracy interval needs at least one item")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, correct / n, size=n_resamples) / n
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: under 'no difference' each flip is a fair coin."""
    n = right_to_wrong + wrong_to_right
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(right_to_wrong, wrong_to_right) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact big-integer division, no overflow


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the same items (B - A)."""

    n: int
    accuracy_a: float
    accuracy_b: float
    right_to_wrong: int  # A correct, B not
    wrong_to_right: int  # A not correct, B correct
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    mcnemar_p: float
    bootstrap_p: float


def compare_paired(a: Sequence[bool], b: Sequence[bool], *, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED, level: float = LEVEL) -> PairedComparison:
    """Delta of accuracy with a paired bootstrap interval, McNemar's exact p-value, and
    the bootstrap's two-sided p-value (share of resampled deltas on the far side of 0)."""
    if len(a) != len(b):
        raise ValueError("paired outcomes need the same items in both runs")
    n = len(a)
    if n == 0:
        raise ValueError("a paired comparison needs at least one shared item")
    minus = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    plus = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [minus / n, (n - minus - plus) / n, plus / n],
                             size=n_resamples)
    deltas = (counts[:, 2] - counts[:, 0]) / n
    low, high = np.quantile(deltas, [(1 - level) / 2, (1 + level) / 2])
    below, above = float(np.mean(deltas <= 0)), float(np.mean(deltas >= 0))
    return PairedComparison(
        n=n, accuracy_a=sum(a) / n, accuracy_b=sum(b) / n, right_to_wrong=minus,
        wrong_to_right=plus, delta=(plus - minus) / n, delta_ci_low=float(low),
        delta_ci_high=float(high), mcnemar_p=mcnemar_exact(minus, plus),
        bootstrap_p=min(1.0, 2 * min(below, above)),
    )


def reasoning_words(raw_output: str) -> int:
    """Length of the reasoning part of an output, in whitespace-separated words."""
    return len(parse_output(raw_output).reasoning.split())


def accuracy_block(items: Sequence[EvalItem]) -> dict[str, float]:
    """n, accuracy with its interval, and the unparseable rate of a group of items."""
    n = len(items)
    correct = sum(1 for item in items if item.correctness == "correct")
    low, high = bootstrap_accuracy_ci(correct, n)
    unparseable = sum(1 for item in items if item.correctness == "unparseable")
    return {"n": float(n), "correct": float(correct), "accuracy": correct / n,
            "ci_low": low, "ci_high": high, "unparseable_rate": unparseable / n}


def summarize(items: Sequence[EvalItem]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Overall metrics and per-category accuracy blocks of a scored run."""
    overall = accuracy_block(items)
    tokens = sum(item.output_tokens for item in items)
    seconds = sum(item.latency_s for item in items)
    metrics = {
        **{("accuracy_" + key if key in ("ci_low", "ci_high") else key): value
           for key, value in overall.items()},
        "mean_output_tokens": tokens / len(items),
        "mean_reasoning_words": sum(reasoning_words(item.raw_output) for item in items)
        / len(items),
        "generation_s": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "ci_level": LEVEL,
        "bootstrap_resamples": float(N_RESAMPLES),
    }
    groups: dict[str, list[EvalItem]] = defaultdict(list)
    for item in items:
        groups[item.category].append(item)
    per_category = {category: accuracy_block(group) for category, group in sorted(groups.items())}
    return metrics, per_category


# --- checking stored metrics against the items --------------------------------------------------
# A result file is input like any other: compare and lineage recompute what its items decide
# instead of showing a stored accuracy of NaN, 0.999 or n = -5. Intervals are recomputed too
# but compared within INTERVAL_TOLERANCE: another numpy release may draw another bootstrap
# stream, which must not make every older result unreadable.

REQUIRED_METRICS = ("n", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                    "unparseable_rate", "mean_output_tokens", "mean_reasoning_words",
                    "tokens_per_s")
INTERVAL_TOLERANCE = 0.01


def _from_items(items: Sequence[EvalItem]) -> dict[str, float]:
    """What the items alone decide (cheap: no parsing)."""
    n = len(items)
    correct = sum(1 for item in items if item.correctness == "correct")
    tokens = sum(item.output_tokens for item in items)
    seconds = sum(item.latency_s for item in items)
    return {"n": float(n), "correct": float(correct), "accuracy": correct / n,
            "unparseable_rate": sum(1 for item in items
                                    if item.correctness == "unparseable") / n,
            "mean_output_tokens": tokens / n, "generation_s": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0}


def _block_problems(where: str, stored: dict[str, float], items: Sequence[EvalItem],
                    prefix: str = "") -> list[tuple[str, str]]:
    problems = []
    expected = _from_items(items)
    if prefix == "":
        expected = {key: value for key, value in expected.items()
                    if key in ("n", "correct", "accuracy", "unparseable_rate")}
    for key, value in expected.items():
        if key in stored and not math.isclose(stored[key], value, rel_tol=1e-9, abs_tol=1e-9):
            problems.append((f"{where}.{key}", f"stored {stored[key]:g}, but its "
                             f"{len(items)} item(s) give {value:g}"))
    low_key, high_key = f"{prefix}ci_low", f"{prefix}ci_high"
    if low_key in stored and high_key in stored and "accuracy" in stored:
        low, high = bootstrap_accuracy_ci(int(expected["correct"]), len(items))
        for key, value in ((low_key, low), (high_key, high)):
            if abs(stored[key] - value) > INTERVAL_TOLERANCE:
                problems.append((f"{where}.{key}", f"stored {stored[key]:g}, but its "
                                 f"{len(items)} item(s) give {value:g}"))
    return problems


def metric_problems(result: EvalResult) -> list[tuple[str, str]]:
    """(field, problem) for every stored metric its items contradict, that is missing, or
    that is not a finite number; empty when the result is consistent."""
    if not result.items:
        return [("items", "the result holds no items")]
    problems = [(f"metrics.{key}", "required metric is missing") for key in REQUIRED_METRICS
                if key not in result.metrics]
    blocks = {"metrics": result.metrics, **{f"per_category.{name}": block
                                            for name, block in result.per_category.items()}}
    for where, block in blocks.items():
        problems += [(f"{where}.{key}", f"{value!r} is not a finite number")
                     for key, value in block.items() if not math.isfinite(value)]
    if problems:
        return problems
    problems += _block_problems("metrics", result.metrics, result.items, prefix="accuracy_")
    groups: dict[str, list[EvalItem]] = defaultdict(list)
    for item in result.items:
        groups[item.category].append(item)
    for name, block in result.per_category.items():
        if name not in groups:
            problems.append((f"per_category.{name}", "no item of this category"))
        else:
            problems += _block_problems(f"per_category.{name}", block, groups[name])
    if result.metrics["mean_reasoning_words"] < 0:
        problems.append(("metrics.mean_reasoning_words", "is negative"))
    return problems


# --- several training seeds ------------------------------------------------------------------
# A student's accuracy varies with its training seed as well as with the test items drawn, and
# the first can be the larger error (bench/RESULTS.md, issue 22). So results over seeds get a
# two-level bootstrap: resample the seeds, then the items (one item resample shared by every
# seed, since all seeds answered the same items), and take the mean over the drawn seeds.


@dataclass(frozen=True)
class SeedInterval:
    """A mean over seeds of a per-seed value (an accuracy, or a paired difference)."""

    per_seed: tuple[float, ...]
    mean: float
    ci_low: float
    ci_high: float


@lru_cache(maxsize=2)
def _item_weights(n_items: int, n_resamples: int, seed: int) -> tuple[np.ndarray, dict]:
    """Each resample's item weights (how often each item is drawn; shared across seeds),
    and the random stream's state after them. They depend on the sizes and the seed alone,
    and drawing them is most of a bootstrap's cost: a report that bootstraps every recipe,
    pair and teacher over the same items draws them once."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_items, np.full(n_items, 1 / n_items),
                              size=n_resamples).astype(np.float64)
    weights.setflags(write=False)
    return weights, rng.bit_generator.state


def two_level_bootstrap(values: np.ndarray, *, n_resamples: int = N_RESAMPLES,
                        seed: int = SEED, level: float = LEVEL,
                        relative_to: np.ndarray | None = None) -> SeedInterval:
    """Percentile interval of the mean over seeds of ``values`` (seeds x items: 0/1 for an
    accuracy, -1/0/+1 for a paired difference), seeds resampled first, then items.

    ``relative_to`` (one value an item, e.g. a teacher's 0/1 on the same items): the mean
    over seeds divided by its mean, both over the same item resample, so the interval of a
    student's share of its teacher covers the choice of items once, not twice."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError("two_level_bootstrap needs a (seeds x items) array with both > 0")
    n_seeds, n_items = values.shape
    weights, state = _item_weights(n_items, n_resamples, seed)
    rng = np.random.default_rng()
    rng.bit_generator.state = state  # where the stream stood after drawing the weights
    per_seed_means = values @ weights.T / n_items  # (seeds, resamples)
    drawn = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = per_seed_means[drawn, np.arange(n_resamples)[:, None]].mean(axis=1)
    per_seed = values.mean(axis=1)
    if relative_to is not None:
        reference = np.asarray(relative_to, dtype=np.float64)
        if reference.shape != (n_items,) or reference.sum() <= 0:
            raise ValueError("relative_to needs one value an item and a positive mean")
        resampled = weights @ reference / n_items  # (resamples,)
        means = np.divide(means, resampled, out=np.full_like(means, np.nan),
                          where=resampled > 0)
        means = means[~np.isnan(means)]
        per_seed = per_seed / reference.mean()
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return SeedInterval(per_seed=tuple(float(v) for v in per_seed),
                        mean=float(per_seed.mean()), ci_low=float(low), ci_high=float(high))


def paired_t_p(differences: Sequence[float]) -> float:
    """Two-sided p of a paired t-test over seeds (per-seed differences of two recipes that
    share each seed); 1.0 when it cannot be computed (fewer than two seeds)."""
    from scipy import stats

    diffs = np.asarray(differences, dtype=np.float64)
    if len(diffs) < 2:
        return 1.0
    if np.allclose(diffs, diffs[0]):
        return 0.0 if diffs[0] != 0 else 1.0
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)
