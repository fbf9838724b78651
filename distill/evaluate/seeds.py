"""Results of one recipe trained with several seeds, grouped, and groups compared.

A from-scratch student's accuracy moves with its training seed, by more than the test items'
bootstrap interval shows (bench/RESULTS.md, issue 22). So a claim between two recipes is made
over seeds: each group reports its mean, every seed's value and a two-level bootstrap interval
(seeds, then items); two groups are paired seed by seed (the same seed draws the same
initialisation and data order) and tested across seeds.

Which results belong together is read from lineage: a result names its checkpoint's
RunManifest, whose ``recipe_hash`` is the training config's hash without the seed (and
without speed-only fields); results of the same recipe, dataset version, eval set and mode
form one group. Groups can also be named explicitly (``label=result,result,...``).

Teachers (models not trained here, evaluated on the same eval set through their engines)
stand beside the groups as references: each group's accuracy is also given as its share of
the best teacher's, with the same two-level interval (one item resample for both).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.core.errors import DistillError
from distill.core.shards import read_json_model
from distill.evaluate.compare import LoadedResult, load_results
from distill.evaluate.lineage import resolve
from distill.evaluate.metrics import SeedInterval, paired_t_p, two_level_bootstrap
from distill.schemas import RunManifest, content_hash


@dataclass(frozen=True)
class SeededResult:
    """One result with the seed and recipe of the run behind it."""

    loaded: LoadedResult
    seed: int | None
    recipe: str  # the grouping key: recipe, dataset version, eval set, mode


@dataclass
class SeedGroup:
    """The results of one recipe, one per seed (sorted by seed)."""

    label: str
    members: list[SeededResult] = field(default_factory=list)

    @property
    def seeds(self) -> list[int | None]:
        return [member.seed for member in self.members]

    @property
    def results(self) -> list[LoadedResult]:
        return [member.loaded for member in self.members]


@dataclass(frozen=True)
class GroupSummary:
    """A group's accuracy over seeds and items (and its share of the best teacher's)."""

    group: SeedGroup
    accuracy: SeedInterval
    n_items: int
    share: SeedInterval | None = None  # mean accuracy / the best teacher's, shared items
    share_of: str | None = None  # that teacher's label


@dataclass(frozen=True)
class TeacherSummary:
    """A teacher on the eval set: one result, its interval over the items alone."""

    loaded: LoadedResult
    accuracy: SeedInterval
    n_items: int
    best: bool = False  # the teacher the students' shares are of

    @property
    def label(self) -> str:
        return self.loaded.label


@dataclass(frozen=True)
class GroupPair:
    """Group ``b`` against the baseline group ``a``, seed by seed (b - a)."""

    a: SeedGroup
    b: SeedGroup
    seeds: list[tuple[int | None, int | None]]  # the paired seeds (a's, b's)
    delta: SeedInterval
    t_p: float  # paired t-test across seeds
    same_sign: bool  # every seed's difference on the same side of 0
    n_items: int


# --- grouping --------------------------------------------------------------------------------


def seeded(loaded: LoadedResult) -> SeededResult:
    """The seed and recipe key of a result, from the RunManifest its model names."""
    result = loaded.result
    manifest = _run_manifest(loaded)
    if manifest is None:  # no training run of ours: each result is its own recipe
        key = content_hash({"model": result.model.model_dump(mode="json")})
        return SeededResult(loaded, None, _key(key, None, loaded))
    seed = manifest.config.get("seed")
    recipe = manifest.recipe_hash or content_hash(
        {k: v for k, v in manifest.config.items() if k != "seed"})
    return SeededResult(loaded, int(seed) if isinstance(seed, int) else None,
                        _key(recipe, manifest.dataset_version, loaded))


def _key(recipe: str, dataset: str | None, loaded: LoadedResult) -> str:
    result = loaded.result
    return content_hash({"recipe": recipe, "dataset": dataset, "eval_set": result.eval_set_hash,
                         "mode": result.mode})


def _run_manifest(loaded: LoadedResult) -> RunManifest | None:
    ref = loaded.result.model.run_manifest
    if ref is None:
        return None
    path = resolve(loaded.path.parent, ref)
    if not path.is_file():
        raise DistillError(f"{loaded.path}: its run manifest {path} is missing, so its seed "
                           "and recipe are unknown (name the groups explicitly: "
                           "--group LABEL=RESULT,RESULT)")
    return read_json_model(path, RunManifest)


def group_by_recipe(results: Iterable[LoadedResult]) -> list[SeedGroup]:
    """Results of the same recipe that differ only in seed, in the order first met."""
    groups: dict[str, SeedGroup] = {}
    for loaded in results:
        member = seeded(loaded)
        group = groups.setdefault(member.recipe, SeedGroup(label=_group_label(loaded)))
        if member.seed is not None and member.seed in group.seeds:
            raise DistillError(f"two results of one recipe with the same seed {member.seed}: "
                               f"{group.members[group.seeds.index(member.seed)].loaded.path} "
                               f"and {loaded.path}")
        group.members.append(member)
    for group in groups.values():
        group.members.sort(key=lambda m: (m.seed is None, m.seed or 0))
    return list(groups.values())


def named_groups(spec: dict[str, list[Path]]) -> list[SeedGroup]:
    """Groups named explicitly (label -> result files); seeds still read from lineage."""
    groups = []
    for label, paths in spec.items():
        members = [seeded(loaded) for loaded in load_results(paths)]
        members.sort(key=lambda m: (m.seed is None, m.seed or 0))
        groups.append(SeedGroup(label=label, members=members))
    return groups


def _group_label(loaded: LoadedResult) -> str:
    """'cot' for runs/cot/seed-0/final; the model's name otherwise."""
    name = loaded.result.model.name
    parts = Path(loaded.result.model.path or name).parts
    for index, part in enumerate(parts):
        if part.startswith("seed-") and index > 0:
            return f"{parts[index - 1]} ({loaded.result.mode})"
    return f"{name} ({loaded.result.mode})"


# --- statistics ------------------------------------------------------------------------------


def correct_matrix(results: list[LoadedResult], ids: list[str]) -> np.ndarray:
    """(seeds x items) 1.0 where the result got the item right."""
    rows = []
    for loaded in results:
        right = {item.sample_id: item.correctness == "correct" for item in loaded.result.items}
        rows.append([float(right[sid]) for sid in ids])
    return np.array(rows)


def shared_ids(results: list[LoadedResult]) -> list[str]:
    """Items (by id and gold) every result answered, in the first result's order."""
    keys = [{(item.sample_id, item.gold) for item in loaded.result.items} for loaded in results]
    common = set.intersection(*keys)
    ids = [item.sample_id for item in results[0].result.items
           if (item.sample_id, item.gold) in common]
    if not ids:
        raise DistillError("the grouped results share no items (different eval sets?)")
    return ids


def summarize_group(group: SeedGroup, teacher: LoadedResult | None = None) -> GroupSummary:
    """A group's accuracy; with a teacher, also its share of the teacher's accuracy, both on
    the items the group and the teacher share."""
    ids = shared_ids(group.results)
    summary = GroupSummary(group, two_level_bootstrap(correct_matrix(group.results, ids)),
                           len(ids))
    if teacher is None:
        return summary
    ids = shared_ids([*group.results, teacher])
    reference = correct_matrix([teacher], ids)[0]
    if not reference.any():
        return summary
    share = two_level_bootstrap(correct_matrix(group.results, ids), relative_to=reference)
    return GroupSummary(summary.group, summary.accuracy, summary.n_items, share, teacher.label)


def summarize_teachers(teachers: Sequence[LoadedResult]) -> list[TeacherSummary]:
    """Each teacher's accuracy (items bootstrapped), the best marked."""
    summaries = []
    for loaded in teachers:
        ids = shared_ids([loaded])
        summaries.append(TeacherSummary(loaded, two_level_bootstrap(
            correct_matrix([loaded], ids)), len(ids)))
    if summaries:
        best = max(range(len(summaries)), key=lambda i: summaries[i].accuracy.mean)
        summaries[best] = TeacherSummary(summaries[best].loaded, summaries[best].accuracy,
                                         summaries[best].n_items, best=True)
    return summaries


def pair_groups(a: SeedGroup, b: SeedGroup) -> GroupPair:
    """Pair the groups' results in seed order (seed with seed when both have the same seeds)
    and bootstrap the mean difference over seeds and items."""
    count = min(len(a.members), len(b.members))  # both sorted by seed
    pairs = list(zip(a.members[:count], b.members[:count], strict=True))
    ids = shared_ids([m.loaded for pair in pairs for m in pair])
    diffs = (correct_matrix([p[1].loaded for p in pairs], ids)
             - correct_matrix([p[0].loaded for p in pairs], ids))
    delta = two_level_bootstrap(diffs)
    signs = {np.sign(value) for value in delta.per_seed}
    return GroupPair(a=a, b=b, seeds=[(p[0].seed, p[1].seed) for p in pairs], delta=delta,
                     t_p=paired_t_p(delta.per_seed), same_sign=len(signs) == 1 and 0 not in signs,
                     n_items=len(ids))


@dataclass
class SeedComparison:
    """Every group's summary, and every group against the baseline group."""

    summaries: list[GroupSummary]
    pairs: list[GroupPair]
    teachers: list[TeacherSummary] = field(default_factory=list)

    @property
    def best_teacher(self) -> TeacherSummary | None:
        return next((teacher for teacher in self.teachers if teacher.best), None)


def compare_groups(groups: list[SeedGroup], *, baseline: int = 0,
                   teachers: Sequence[LoadedResult] = ()) -> SeedComparison:
    """Every group's summary and every group against the baseline group; with teachers
    (results of models not trained here, on the same eval set), their accuracy and each
    group's share of the best one's."""
    if not 0 <= baseline < len(groups):
        raise DistillError(f"baseline {baseline} is out of range: {len(groups)} group(s)")
    references = summarize_teachers(teachers)
    best = next((t.loaded for t in references if t.best), None)
    return SeedComparison(
        summaries=[summarize_group(group, best) for group in groups],
        pairs=[pair_groups(groups[baseline], group)
               for index, group in enumerate(groups) if index != baseline],
        teachers=references)
