"""Seeds as an axis of comparison (issue 22): results of one recipe that differ only in
training seed are grouped through their run manifests, and the two-level bootstrap (seeds,
then items) covers a known effect on simulated results where the items-only interval does
not. Fast: numpy and small JSON files, no training."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main
from distill.core.shards import write_json_atomic
from distill.evaluate.compare import load_results
from distill.evaluate.metrics import bootstrap_accuracy_ci, summarize, two_level_bootstrap
from distill.evaluate.seeds import compare_groups, group_by_recipe, named_groups
from distill.schemas import EvalItem, EvalResult, ModelRef, RunManifest
from distill.train.config import load_config, recipe_hash
from distill.train.parallel import seed_jobs, seed_processes

N_ITEMS = 40
DATASET = "d" * 64


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_seeded_result(root: Path, name: str, seed: int, right: list[bool],
                        overrides: tuple[str, ...] = ()) -> Path:
    """A run folder RUN/seed-N with its RunManifest, and an EvalResult naming it."""
    config = load_config("digits-cot", [f"seed={seed}", *overrides])
    run = root / "runs" / name / f"seed-{seed}"
    write_json_atomic(run / "manifest.json", RunManifest(
        run_id=f"{name}{seed}", created_at=datetime(2026, 12, 6, tzinfo=UTC), stage="cot",
        dataset_version=DATASET, config=config.model_dump(mode="json"),
        config_hash=config.hash(), recipe_hash=recipe_hash(config), steps=10,
        checkpoint_path="final"))
    items = [EvalItem(sample_id=f"item-{i}", category="sum", gold=str(i),
                      raw_output=f"Answer: {i if ok else -1}", extracted=str(i if ok else -1),
                      correctness="correct" if ok else "wrong", output_tokens=3, latency_s=0.0)
             for i, ok in enumerate(right)]
    result = EvalResult(
        result_id=_sha(f"{name}{seed}"), created_at=datetime(2026, 12, 6, tzinfo=UTC),
        model=ModelRef(kind="siqvl", name=f"seed-{seed}/final", path=str(run / "final"),
                       run_manifest=str(run / "manifest.json")),
        eval_set="digits:test", eval_set_hash=_sha("test"), mode="cot",
        generation={}, metrics=summarize(items)[0], per_category=summarize(items)[1],
        items=items)
    path = root / "results" / f"{name}-seed{seed}.json"
    write_json_atomic(path, result)
    return path


def _right(accuracy: float, seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    return list(rng.random(N_ITEMS) < accuracy)


@pytest.fixture
def two_recipes(tmp_path: Path) -> list[Path]:
    """Recipe 'base' (1600 steps) and 'long' (3200 steps), three seeds each, interleaved and
    shuffled, so only the manifests can tell which belongs to which."""
    paths = []
    for seed in (2, 0, 1):
        paths.append(write_seeded_result(tmp_path, "base", seed, _right(0.5, seed)))
        paths.append(write_seeded_result(tmp_path, "long", seed, _right(0.9, 10 + seed),
                                         ("max_steps=3200", "threads=2")))
    return paths


def test_grouping_finds_the_seeds_of_each_recipe_from_run_manifests(two_recipes) -> None:
    groups = group_by_recipe(load_results(two_recipes))
    assert [g.label for g in groups] == ["base (cot)", "long (cot)"]
    # threads is a speed field: it does not split a recipe; the step count does
    assert [g.seeds for g in groups] == [[0, 1, 2], [0, 1, 2]]
    assert all(m.loaded.path.name.startswith(g.label.split()[0])
               for g in groups for m in g.members)


def test_same_seed_twice_in_one_recipe_is_refused(tmp_path: Path) -> None:
    a = write_seeded_result(tmp_path / "a", "base", 0, _right(0.5, 0))
    b = write_seeded_result(tmp_path / "b", "base", 0, _right(0.5, 1))
    with pytest.raises(Exception, match="same seed 0"):
        group_by_recipe(load_results([a, b]))


def test_groups_are_paired_seed_by_seed(two_recipes) -> None:
    seeds = compare_groups(group_by_recipe(load_results(two_recipes)))
    (pair,) = seeds.pairs
    assert pair.seeds == [(0, 0), (1, 1), (2, 2)]
    base, long = (s.accuracy for s in seeds.summaries)
    assert pair.delta.per_seed == pytest.approx(
        tuple(b - a for a, b in zip(base.per_seed, long.per_seed, strict=True)))
    assert pair.delta.mean > 0 and pair.same_sign
    assert pair.delta.ci_low <= pair.delta.mean <= pair.delta.ci_high


def test_named_groups_read_seeds_too(two_recipes) -> None:
    base = [p for p in two_recipes if p.name.startswith("base")]
    (group,) = named_groups({"mine": base})
    assert group.label == "mine" and group.seeds == [0, 1, 2]


def test_compare_by_seed_writes_each_seed_in_the_reports(two_recipes, tmp_path) -> None:
    out = tmp_path / "report"
    main(["compare", *map(str, two_recipes), "--by-seed", "--out", str(out)])
    markdown = (out / "compare.md").read_text()
    assert "## Across training seeds" in markdown and "long (cot) - base (cot)" in markdown
    assert (out / "seeds.png").stat().st_size > 0
    assert "Across training seeds" in (out / "compare.html").read_text()


def test_seed_jobs_share_a_recipe_and_split_the_cores() -> None:
    config = load_config("digits-cot")
    jobs = seed_jobs(config, Path("data"), Path("out"), [0, 1, 2])
    assert [job.out for job in jobs] == [Path("out/seed-0"), Path("out/seed-1"),
                                         Path("out/seed-2")]
    assert len({recipe_hash(job.config) for job in jobs}) == 1
    assert len({job.config.hash() for job in jobs}) == 3
    assert seed_processes(3, cuda=False, cores=2) == (2, 1)
    assert seed_processes(3, cuda=False, cores=16) == (3, 5)
    assert seed_processes(3, cuda=True) == (1, 1)


# --- the two-level bootstrap on simulated results ---------------------------------------------


def simulate(rng: np.random.Generator, seeds: int, items: int, effect: float,
             seed_sd: float) -> np.ndarray:
    """(seeds x items) paired differences B - A: A gets 60% right; each seed's true effect
    is drawn around ``effect`` and B flips A's wrong items to right (or right to wrong) at
    the rate that gives it."""
    base = rng.random(items) < 0.6
    out = []
    for true in np.clip(effect + rng.normal(0, seed_sd, seeds), -0.35, 0.35):
        if true < 0:
            other = np.where(base & (rng.random(items) < abs(true) / 0.6), False, base)
        else:
            other = np.where(~base & (rng.random(items) < true / 0.4), True, base)
        out.append(other.astype(float) - base.astype(float))
    return np.array(out)


def coverage(seeds: int, *, reps: int = 300, effect: float = 0.1, seed_sd: float = 0.08,
             items: int = 200) -> tuple[float, float]:
    """Share of simulated studies whose interval holds the known effect: two-level, and
    the items-only interval of the seeds' pooled items."""
    rng = np.random.default_rng(7)
    two_level = items_only = 0
    for rep in range(reps):
        diffs = simulate(rng, seeds, items, effect, seed_sd)
        interval = two_level_bootstrap(diffs, n_resamples=1000, seed=rep)
        two_level += interval.ci_low <= effect <= interval.ci_high
        pooled = diffs.reshape(-1)
        draws = rng.choice(pooled, size=(1000, pooled.size)).mean(axis=1)
        low, high = np.quantile(draws, [0.025, 0.975])
        items_only += low <= effect <= high
    return two_level / reps, items_only / reps


def test_two_level_bootstrap_covers_a_known_effect_where_items_only_does_not() -> None:
    two_level, items_only = coverage(10)
    assert two_level >= 0.88  # nominal 95%; the percentile bootstrap runs a little narrow
    assert items_only <= 0.75  # blind to the seed-to-seed spread


def test_two_level_bootstrap_with_three_seeds_is_wider_but_still_narrow() -> None:
    """Three seeds: better than items only, below nominal (reported in seed_report.NOTE)."""
    two_level, items_only = coverage(3)
    assert items_only < two_level < 0.95


def test_two_level_bootstrap_without_seed_noise_matches_the_items_interval() -> None:
    rng = np.random.default_rng(3)
    right = (rng.random((1, 600)) < 0.8).astype(float)
    interval = two_level_bootstrap(right)
    low, high = bootstrap_accuracy_ci(int(right.sum()), 600)
    assert interval.mean == pytest.approx(right.mean())
    assert interval.ci_low == pytest.approx(low, abs=0.01)
    assert interval.ci_high == pytest.approx(high, abs=0.01)


# --- teachers beside the recipes (issue 31) -------------------------------------------------


def write_teacher_result(root: Path, teacher_id: str, right: list[bool]) -> Path:
    """A teacher's result as `distill eval --model engine:SET#ID` writes it: no run."""
    items = [EvalItem(sample_id=f"item-{i}", category="sum", gold=str(i),
                      raw_output=f"Answer: {i if ok else -1}", extracted=str(i if ok else -1),
                      correctness="correct" if ok else "wrong", output_tokens=3, latency_s=0.0)
             for i, ok in enumerate(right)]
    result = EvalResult(
        result_id=_sha(teacher_id), created_at=datetime(2026, 12, 6, tzinfo=UTC),
        model=ModelRef(kind="engine", name=teacher_id), eval_set="digits:test",
        eval_set_hash=_sha("test"), mode="cot", generation={"engine": "builtin"},
        metrics=summarize(items)[0], per_category=summarize(items)[1], items=items)
    path = root / "teachers" / f"{teacher_id}.json"
    write_json_atomic(path, result)
    return path


@pytest.fixture
def two_teachers(tmp_path: Path) -> list[Path]:
    return [write_teacher_result(tmp_path, "logreg", [i % 2 == 0 for i in range(N_ITEMS)]),
            write_teacher_result(tmp_path, "knn", [i % 10 != 0 for i in range(N_ITEMS)])]


def test_each_recipe_gets_its_share_of_the_best_teacher(two_recipes, two_teachers) -> None:
    teachers = load_results(two_teachers, labels=["logreg", "knn"])
    seeds = compare_groups(group_by_recipe(load_results(two_recipes)), teachers=teachers)
    assert [(t.label, t.best) for t in seeds.teachers] == [("logreg", False), ("knn", True)]
    assert seeds.teachers[1].accuracy.mean == pytest.approx(0.9)
    for summary in seeds.summaries:
        assert summary.share_of == "knn"
        assert summary.share.per_seed == pytest.approx(
            tuple(value / 0.9 for value in summary.accuracy.per_seed))
        assert summary.share.mean == pytest.approx(summary.accuracy.mean / 0.9)
        assert summary.share.ci_low < summary.share.mean < summary.share.ci_high
    assert seeds.summaries[0].share.mean < seeds.summaries[1].share.mean


def test_a_share_resamples_the_items_once_for_student_and_teacher() -> None:
    """A student that answers exactly as its teacher holds 100% of it in every resample:
    the items drawn are the same for both, so the interval has no width."""
    rng = np.random.default_rng(0)
    teacher = (rng.random(300) < 0.7).astype(float)
    share = two_level_bootstrap(np.tile(teacher, (3, 1)), relative_to=teacher)
    assert (share.ci_low, share.mean, share.ci_high) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive mean"):
        two_level_bootstrap(np.tile(teacher, (3, 1)), relative_to=np.zeros(300))


def test_compare_places_the_teachers_in_every_table_and_plot(two_recipes, two_teachers,
                                                             tmp_path) -> None:
    out = tmp_path / "report"
    main(["compare", *map(str, two_recipes), "--by-seed", "--out", str(out),
          "--teacher", str(two_teachers[0].parent)])
    markdown = (out / "compare.md").read_text()
    # the header's brackets escaped: Markdown shows them as written (md_data_table)
    assert r"share of the best teacher (knn (cot)) % \[95% CI\]" in markdown
    assert "| teacher knn (cot) (best) | - | 40 | 90.0 " in markdown
    assert "| teacher logreg (cot) |" in markdown
    # the per-result table names each run by recipe and seed, and the teachers as teachers
    assert "| base seed 0 (cot) | digits:test |" in markdown
    assert "| teacher knn (cot) | digits:test | 40 | 90.0" in markdown
    assert "teacher knn (cot) vs" not in markdown  # references, not paired with the baseline
    for plot in ("seeds.png", "accuracy.png"):
        assert (out / plot).stat().st_size > 0
