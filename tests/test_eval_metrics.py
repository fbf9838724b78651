"""Confidence intervals and paired significance tests on constructed cases with known
answers (hand-computed values, scipy where installed, and brute-force resampling)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.evaluate.cache import CachedGeneration
from distill.evaluate.metrics import (
    bootstrap_accuracy_ci,
    compare_paired,
    mcnemar_exact,
    summarize,
)
from distill.evaluate.runner import score
from distill.schemas import ImageRef, Sample


@pytest.mark.parametrize(("right_to_wrong", "wrong_to_right", "expected"), [
    (0, 0, 1.0),            # no discordant pairs: no evidence at all
    (0, 6, 2 / 64),         # all 6 flips one way: 2 * 0.5^6
    (1, 9, 22 / 1024),      # 2 * (C(10,0) + C(10,1)) / 2^10
    (3, 3, 1.0),            # balanced flips
    (2, 3, 1.0),            # 2 * (1 + 5 + 10) / 32 = 1
    (5, 15, 2 * sum(math.comb(20, k) for k in range(6)) / 2**20),
])
def test_mcnemar_exact_hand_computed(right_to_wrong: int, wrong_to_right: int,
                                     expected: float) -> None:
    assert mcnemar_exact(right_to_wrong, wrong_to_right) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(wrong_to_right, right_to_wrong) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest_and_survives_large_counts() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 9), (7, 19), (40, 61), (130, 170)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue,
                                                    rel=1e-9)
    assert mcnemar_exact(2000, 2100) == pytest.approx(
        stats.binomtest(2000, 4100, 0.5).pvalue, rel=1e-6)


def test_bootstrap_interval_matches_item_resampling_and_known_widths() -> None:
    # Degenerate cases have zero-width intervals.
    assert bootstrap_accuracy_ci(20, 20) == (1.0, 1.0)
    assert bootstrap_accuracy_ci(0, 20) == (0.0, 0.0)
    # p = 0.5, n = 400: the interval is about p +- 1.96 * sqrt(p(1-p)/n) = 0.5 +- 0.049.
    low, high = bootstrap_accuracy_ci(200, 400)
    assert low == pytest.approx(0.451, abs=0.006) and high == pytest.approx(0.549, abs=0.006)
    # Same distribution as resampling the 0/1 items themselves (brute force).
    outcomes = np.array([1] * 37 + [0] * 23)
    rng = np.random.default_rng(1)
    brute = rng.choice(outcomes, size=(20_000, outcomes.size)).mean(axis=1)
    expected = np.quantile(brute, [0.025, 0.975])
    assert bootstrap_accuracy_ci(37, 60) == pytest.approx(tuple(expected), abs=0.017)
    # Fixed seed: reproducible to the bit.
    assert bootstrap_accuracy_ci(37, 60) == bootstrap_accuracy_ci(37, 60)


def test_paired_comparison_on_constructed_runs() -> None:
    # 100 items: A right on the first 60, B right on items 10..79.
    a = [i < 60 for i in range(100)]
    b = [10 <= i < 80 for i in range(100)]
    result = compare_paired(a, b)
    assert (result.right_to_wrong, result.wrong_to_right) == (10, 20)
    assert result.accuracy_a == 0.6 and result.accuracy_b == 0.7
    assert result.delta == pytest.approx(0.1)
    assert result.mcnemar_p == pytest.approx(mcnemar_exact(10, 20))
    assert result.delta_ci_low < 0.1 < result.delta_ci_high
    # The paired interval is far narrower than unpaired intervals would suggest: the
    # 70 items both runs agree on carry no noise. SD of delta = sqrt((10+20)/100 - 0.01)/10.
    sd = math.sqrt((0.3 - 0.01) / 100)
    assert result.delta_ci_high - result.delta_ci_low == pytest.approx(2 * 1.96 * sd, rel=0.1)
    # Identical runs: no difference, certainly not significant.
    same = compare_paired(a, a)
    assert same.delta == 0 and same.mcnemar_p == 1.0 and same.bootstrap_p == 1.0
    assert (same.delta_ci_low, same.delta_ci_high) == (0.0, 0.0)
    # A strong one-sided difference is significant under both tests.
    strong = compare_paired([False] * 50 + [True] * 50, [True] * 100)
    assert strong.mcnemar_p < 1e-10 and strong.bootstrap_p < 0.001 and strong.delta_ci_low > 0.3


def test_paired_comparison_refuses_unpaired_input() -> None:
    with pytest.raises(ValueError, match="same items"):
        compare_paired([True], [True, False])
    with pytest.raises(ValueError, match="at least one"):
        compare_paired([], [])


def test_summarize_counts_unparseable_as_not_correct_and_splits_categories() -> None:
    image = ImageRef(path="a.png", sha256="0" * 64)

    def item(i: int, category: str, gold: str, text: str, tokens: int):
        sample = Sample(id=f"s{i}", image=image, question="q?", answer=gold,
                        answer_type="number", category=category, source="t")
        return score(sample, CachedGeneration(input_hash="h", sample_id=sample.id, text=text,
                                              output_tokens=tokens, latency_s=0.5,
                                              finish_reason="stop"))

    items = [item(0, "sum", "3", "1 + 2 = 3\nAnswer: 3", 10),
             item(1, "sum", "4", "Answer: 5", 4),
             item(2, "max", "1", "I am not sure what the picture shows here", 20),
             item(3, "max", "2", "2 - 0 = 2, so the answer is 2.", 6)]
    metrics, per_category = summarize(items)
    assert metrics["accuracy"] == 0.5 and metrics["unparseable_rate"] == 0.25
    assert metrics["mean_output_tokens"] == 10.0
    assert metrics["tokens_per_s"] == pytest.approx(40 / 2.0)
    assert metrics["mean_reasoning_words"] == pytest.approx((5 + 0 + 9 + 6) / 4)
    assert per_category["sum"]["accuracy"] == 0.5 and per_category["max"]["n"] == 2
    assert per_category["max"]["unparseable_rate"] == 0.5
