"""Distilling without gold: labels from teacher consensus against the withheld gold, and
students trained on consensus-selected traces against the demo's gold-filtered student.

The demo's data (data/demo.yaml: the digits sum questions, 8,000 train / 400 val / 600
test, the two built-in teachers with k=2) is ingested twice: as the demo does, and with
the train split's gold answers withheld (``distill ingest --withhold-gold train``; the
gold goes to a file the pipeline never reads, used here only to measure). The test split
keeps its gold for scoring. Then:

1. generate the same traces for both (the teachers see the same images and prompts);
2. filter the gold pool with the demo's policy (``default``: answer == gold), and the
   unlabeled pool with ``data/policies/consensus.yaml`` at each agreement threshold
   (``majority_fraction`` >= t): one scoring pass, one dataset version per threshold;
3. per threshold, how many items keep a label and the share of those labels equal to the
   withheld gold (their precision); with the built-in digits judge (``distill judge``,
   data/judges/digits.yaml) also the judge breaking ties and vetting traces (labels only);
4. stage 0 (the vision tower), then a CoT student per dataset (``digits-cot``, the demo's
   800 steps), each its own ``distill train`` process (``--jobs`` at once);
5. every student on the 600 test items: accuracy with 95% bootstrap intervals, and the
   paired difference to the gold-filtered student (McNemar's exact test).

    python bench/consensus_labels.py --out /tmp/consensus            # everything
    python bench/consensus_labels.py --out /tmp/consensus --labels-only
    python bench/consensus_labels.py --out /tmp/consensus --quick    # a smoke run

Every stage is resumable (run the same command again); the figures are printed and
written to OUT/consensus_labels.md and .json, with the machine's load average, since
training times (and, through thread contention, nothing else) depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # as the distill command does

from distill.core.answers import same_answer  # noqa: E402
from distill.core.evalsets import load_eval_set  # noqa: E402
from distill.core.shards import iter_records  # noqa: E402
from distill.demo import load_plan  # noqa: E402
from distill.filter.pipeline import FilterOptions, FilterResult, run_filter  # noqa: E402
from distill.filter.policy import load_policy, policy_from_dict  # noqa: E402
from distill.filter.store import DatasetStore  # noqa: E402
from distill.generate.runner import GenerateOptions, run_generate  # noqa: E402
from distill.ingest.pipeline import IngestOptions, ingest  # noqa: E402
from distill.ingest.sources.digits import DigitsConfig, iter_digits  # noqa: E402
from distill.schemas import Sample, ScoredTrace  # noqa: E402

DEFAULT_THRESHOLDS = (0.5, 0.75, 1.0)
QUICK_COUNTS = {"train": 400, "val": 50, "test": 100}
QUICK_STEPS = 40


@dataclass
class LabelStats:
    name: str
    policy: str  # what selected the traces, for the table
    is_gold: bool  # the gold-filtered dataset (its labels are the gold)
    version: Path
    traces_kept: int
    items_kept: int
    items_total: int
    labels_right: int
    scored_shards: int
    reused_shards: int

    @property
    def precision(self) -> float:
        return self.labels_right / self.items_kept if self.items_kept else 0.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


# --- data ------------------------------------------------------------------------------------


def ingest_pools(out: Path, plan, counts: dict[str, int]) -> tuple[Path, Path, Path]:
    """(gold ingest folder, unlabeled ingest folder, withheld gold file)."""
    config = DigitsConfig(seed=plan.seed, counts=counts, categories=tuple(plan.categories))
    gold_dir, unlabeled_dir, gold_file = out / "ingest-gold", out / "ingest-unlabeled", \
        out / "withheld-gold.jsonl"
    if not (gold_dir / "manifest.json").exists():
        ingest(iter_digits(config), IngestOptions(out=gold_dir, overwrite=True),
               total=sum(counts.values()))
    if not (unlabeled_dir / "manifest.json").exists():
        ingest(iter_digits(config), IngestOptions(out=unlabeled_dir, overwrite=True,
                                                  withhold_gold=("train",), gold_out=gold_file),
               total=sum(counts.values()))
    return gold_dir, unlabeled_dir, gold_file


def consensus_policy(threshold: float, name: str | None = None, **rules: dict):
    """data/policies/consensus.yaml with majority_fraction >= threshold (and more rules)."""
    data = load_policy("consensus").as_dict()
    data["name"] = name or f"consensus-{threshold:g}"
    data["rules"]["majority_fraction"] = {"min": threshold}
    data["rules"].update(rules)
    return policy_from_dict(data, f"consensus.yaml with majority_fraction >= {threshold:g}")


def label_stats(name: str, policy: str, result: FilterResult, store: Path,
                withheld: dict[str, str], items_total: int) -> LabelStats:
    """Items with a kept trace, and how many of their labels equal the withheld gold."""
    version = DatasetStore(store).version_dir(result.version)
    labels: dict[str, tuple[str, Sample]] = {}
    traces = 0
    for ref in result.manifest.shards:
        for record in iter_records(version / ref.name, ScoredTrace):
            traces += 1
            assert record.label is not None
            labels[record.sample.id] = (record.label, record.sample)
    right = sum(same_answer(label, withheld[sample_id], sample)
                for sample_id, (label, sample) in labels.items())
    return LabelStats(name, policy, policy.startswith("default"), version, traces, len(labels),
                      items_total, right, result.scored_shards, result.reused_shards)


def datasets(out: Path, plan, counts: dict[str, int], thresholds: list[float],
             judge: str | None) -> list[LabelStats]:
    """Every dataset version measured: gold-filtered, consensus per threshold, and (with a
    judge) the judge breaking ties / vetting traces."""
    gold_dir, unlabeled_dir, gold_file = ingest_pools(out, plan, counts)
    withheld = {row["id"]: row["answer"]
                for row in map(json.loads, gold_file.read_text().splitlines())}
    stats: list[LabelStats] = []

    def publish(name: str, what: str, folder: Path, traces: Path, policy,
                judgements: Path | None = None) -> None:
        store = out / ("store-gold" if folder == gold_dir else "store-consensus")
        result = run_filter(FilterOptions(
            traces=traces, store=store, policy=policy, judgements=judgements,
            eval_sets=[f"{folder}:{split}" for split in plan.decontaminate if split in counts]))
        stats.append(label_stats(name, what, result, store, withheld, counts["train"]))
        log(f"{name}: version {result.version[:12]}, {stats[-1].items_kept:,} items kept, "
            f"label precision {100 * stats[-1].precision:.1f}% (scored "
            f"{result.scored_shards} shard(s), reused {result.reused_shards})")

    traces = {}
    for name, folder in (("gold", gold_dir), ("consensus", unlabeled_dir)):
        traces[name] = out / f"traces-{name}"
        run_generate(GenerateOptions(samples_dir=folder, out=traces[name],
                                     teacher_set=plan.teachers, splits=("train",)))
    publish("gold", "default (answer == gold)", gold_dir, traces["gold"],
            load_policy(plan.policy))
    for t in thresholds:
        publish(f"consensus-{t:g}", f"consensus, majority_fraction >= {t:g}", unlabeled_dir,
                traces["consensus"], consensus_policy(t))
    if judge is None:
        return stats
    from distill.generate.judging import JudgeOptions, run_judge

    judged = out / "judged"
    summary = run_judge(JudgeOptions(traces["consensus"], judge, judged))
    log(f"judge {judge}: {summary.judged:,} judgements written, {summary.rejected:,} "
        f"rejected, {summary.already_done:,} already done")
    low = min(thresholds)
    publish(f"judge-ties-{low:g}", f"consensus or judge tie-break, majority_fraction >= "
            f"{low:g}", unlabeled_dir, traces["consensus"],
            consensus_policy(low, f"judge-ties-{low:g}",
                             label_source={"in": ["gold", "consensus", "judge"]}), judged)
    publish(f"consensus-{low:g}+judge", f"consensus, majority_fraction >= {low:g}, "
            "judge_score == 1", unlabeled_dir, traces["consensus"],
            consensus_policy(low, f"consensus-{low:g}+judge", judge_score={"min": 1.0}),
            judged)
    return stats


# --- students --------------------------------------------------------------------------------


def train(args: list[str], out: Path, log_path: Path) -> None:
    """One `distill train` process; resumes a run a killed bench left behind (`--resume`
    decides under the run's lock: finished, resumed, or started over in place)."""
    from distill.train.checkpoint import is_finished

    if is_finished(out):
        return
    command = [sys.executable, "-m", "distill", "train", *args, "--out", str(out), "--resume"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILL_PROGRESS": "0"}
    with open(log_path, "w", encoding="utf-8") as handle:
        subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                       check=True)


RUN_NAME = re.compile(r"^(?P<dataset>[^~]+)(?P<suffix>(?:~seed(?P<seed>\d+))?(?:~\d+steps)?)$")


def run_name(dataset: str, seed: int, steps: int, plan_seed: int, plan_steps: int) -> str:
    """A student's name: its dataset, then its training seed and steps where they are not
    the demo plan's."""
    return (dataset + (f"~seed{seed}" if seed != plan_seed else "")
            + (f"~{steps}steps" if steps != plan_steps else ""))


def students(out: Path, plan, student, stats: list[LabelStats], train_names: list[str],
             seeds: list[int], steps: int, plan_steps: int, jobs: int) -> dict[str, Path]:
    """Stage 0, then one CoT student (the demo's ``student`` plan) per chosen dataset and
    training seed (the seed sets the student's initialisation and its data order)."""
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    vision = runs / "vision"
    overrides = {"seed": plan.seed, **plan.vision_set}
    log("stage 0: the vision tower")
    train(["--config", plan.vision, *_sets(overrides)], vision, runs / "vision.log")
    by_name = {s.name: s for s in stats}
    chosen = [(by_name[name], seed) for seed in seeds for name in train_names]

    def one(job: tuple[LabelStats, int]) -> tuple[str, Path]:
        stat, seed = job
        name = run_name(stat.name, seed, steps, plan.seed, plan_steps)
        sets = {**student.set, "max_steps": steps, "vision_path": str(vision / "final"),
                "seed": seed}
        start = time.perf_counter()
        train(["--config", student.config, "--data", str(stat.version), *_sets(sets)],
              runs / name, runs / f"{name}.log")
        log(f"trained {name} in {time.perf_counter() - start:.0f} s")
        return name, runs / name

    log(f"training {len(chosen)} student(s), {jobs} at a time: "
        + ", ".join(run_name(s.name, seed, steps, plan.seed, plan_steps)
                    for s, seed in chosen))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return dict(pool.map(one, chosen))


def _sets(values: dict) -> list[str]:
    return [part for key, value in values.items() for part in ("--set", f"{key}={value}")]


def evaluate(out: Path, plan, runs: dict[str, Path], test_set: str) -> dict[str, Path]:
    from distill.core.predictors import PredictorOptions
    from distill.core.shards import write_json_atomic
    from distill.evaluate.runner import evaluate_model

    eval_set = load_eval_set(test_set)
    options = PredictorOptions(batch_size=plan.eval_batch_size,
                               max_new_tokens=plan.max_new_tokens)
    paths = {}
    for name, run in runs.items():
        path = out / "results" / f"{name}.json"
        if not path.exists():
            [(_, evaluated)] = evaluate_model(f"siqvl:{run}", options, [eval_set], ["cot"],
                                              cache_dir=out / "eval-cache", threads=1)
            write_json_atomic(path, evaluated.result)
        paths[name] = path
    return paths


# --- the report ------------------------------------------------------------------------------


def report(out: Path, stats: list[LabelStats], results: dict[str, Path], steps: int,
           plan_seed: int, started: float, loads: list[float]) -> str:

    lines = [
        "Labels (train split, items; precision = derived labels equal to the withheld gold):",
        "", "| dataset | policy | traces kept | items with a label | of all items | "
        "label precision |", "|---|---|---:|---:|---:|---:|"]
    for s in stats:
        precision = "gold" if s.is_gold else f"{100 * s.precision:.1f}%"
        lines.append(f"| {s.name} | {s.policy} | {s.traces_kept:,} | {s.items_kept:,} | "
                     f"{100 * s.items_kept / s.items_total:.1f}% | {precision} |")
    figures: dict = {"labels": [{**vars(s), "version": s.version.name,
                                 "precision": s.precision} for s in stats]}
    if results:
        lines += student_lines(results, steps, plan_seed, figures)
    elapsed = time.perf_counter() - started
    lines += ["", f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.node()}; "
              f"load average (1 min) {min(loads):.1f} to {max(loads):.1f} during the run; "
              f"wall time of this invocation {elapsed / 60:.1f} min."]
    text = "\n".join(lines)
    (out / "consensus_labels.md").write_text(text + "\n", encoding="utf-8")
    figures["load"] = loads
    (out / "consensus_labels.json").write_text(json.dumps(figures, indent=1, default=str),
                                               encoding="utf-8")
    return text


def student_lines(results: dict[str, Path], steps: int, plan_seed: int,
                  figures: dict) -> list[str]:
    """Each student against the gold-filtered student of the same training seed (paired,
    item by item), then each dataset over its seeds."""
    from distill.evaluate.compare import load_results, pair_report

    loaded = dict(zip(results, load_results(list(results.values())), strict=True))
    n = next(iter(loaded.values())).result.metrics["n"]
    lines = ["", f"Students (digits-cot, {steps} steps, stage-0 tower) on the {n:.0f} test "
             "items; each compared item by item with the gold-filtered student of the same "
             "training seed:", "",
             "| student | seed | accuracy % [95% CI] | vs gold-filtered, points [95% CI] | "
             "McNemar p |", "|---|---:|---|---|---:|"]
    figures["students"] = {}
    datasets_seen: list[str] = []
    for name, result in loaded.items():
        parts = RUN_NAME.match(name)
        assert parts is not None, name
        dataset, seed = parts["dataset"], parts["seed"]
        gold = loaded.get("gold" + parts["suffix"])
        pair = pair_report(gold, result).overall if gold is not None and gold is not result \
            else None
        m = result.result.metrics
        delta = "-" if pair is None else (f"{100 * pair.delta:+.1f} [{100 * pair.delta_ci_low:+.1f}"
                                          f", {100 * pair.delta_ci_high:+.1f}]")
        lines.append(f"| {dataset} | {seed or plan_seed} | {100 * m['accuracy']:.1f} "
                     f"[{100 * m['accuracy_ci_low']:.1f}, {100 * m['accuracy_ci_high']:.1f}] | "
                     f"{delta} | {'-' if pair is None else f'{pair.mcnemar_p:.3g}'} |")
        datasets_seen.append(dataset)
        figures["students"][name] = {**m, **({"delta": pair.delta, "delta_ci": [
            pair.delta_ci_low, pair.delta_ci_high], "mcnemar_p": pair.mcnemar_p}
            if pair else {})}
    if len(set(datasets_seen)) < len(datasets_seen):  # some dataset over several seeds
        lines += ["", *over_seeds(list(loaded.values())).splitlines()]
    return lines


def over_seeds(loaded: list) -> str:
    """Each dataset's students over their training seeds, grouped as `distill compare
    --by-seed` groups them (same recipe and dataset version in the run manifests), against
    the gold-filtered group seed by seed: mean, each seed, two-level bootstrap intervals
    (seeds, then items) and a paired t-test across seeds."""
    from distill.evaluate.seed_report import to_markdown
    from distill.evaluate.seeds import compare_groups, group_by_recipe

    groups = group_by_recipe(loaded)
    for group in groups:
        parts = RUN_NAME.match(group.members[0].loaded.path.stem)
        group.label = parts["dataset"] if parts else group.label
    labels = [group.label for group in groups]
    return to_markdown(compare_groups(groups, baseline=labels.index("gold")
                                      if "gold" in labels else 0))


def _dataset_name(value: str) -> str:
    try:
        return f"consensus-{float(value):g}"
    except ValueError:
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Work folder (resumable).")
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
                        help="Agreement thresholds (majority_fraction) to measure.")
    parser.add_argument("--train", default=None, help="Datasets to train students on, by "
                        "threshold or name (e.g. 0.5,consensus-0.5+judge; default: every "
                        "threshold); 'none' for no consensus student. The gold-filtered "
                        "student is always trained.")
    parser.add_argument("--steps", type=int, default=None,
                        help="Training steps per student (default: the demo's CoT student's).")
    parser.add_argument("--seeds", default=None, help="Training seeds, comma-separated "
                        "(default: the demo plan's seed); every student is trained once per "
                        "seed, the gold-filtered one too, to show the training noise.")
    parser.add_argument("--jobs", type=int, default=1, help="Students trained at once.")
    parser.add_argument("--labels-only", action="store_true", help="Measure labels; no students.")
    parser.add_argument("--judge", default="digits", help="Judge file for the judge rows "
                        "(default: data/judges/digits.yaml, the built-in digits judge); "
                        "'none' to skip them.")
    parser.add_argument("--quick", action="store_true",
                        help=f"A smoke run: {QUICK_COUNTS}, {QUICK_STEPS} steps.")
    args = parser.parse_args()
    os.environ.setdefault("DISTILL_PROGRESS", "0")
    started, loads = time.perf_counter(), [os.getloadavg()[0]]
    plan = load_plan("demo")
    counts = QUICK_COUNTS if args.quick else dict(plan.counts)
    cot = next(s for s in plan.students.values() if s.config.endswith("cot"))
    plan_steps = int(cot.set.get("max_steps", 800))
    steps = args.steps or (QUICK_STEPS if args.quick else plan_steps)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    trained = [f"consensus-{t:g}" for t in thresholds] if args.train is None else (
        [] if args.train == "none" else [_dataset_name(t) for t in args.train.split(",")])
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"data: {counts}, thresholds {thresholds}")
    stats = datasets(args.out, plan, counts, thresholds,
                     None if args.judge == "none" else args.judge)
    loads.append(os.getloadavg()[0])
    results: dict[str, Path] = {}
    if not args.labels_only:
        names = ["gold", *trained]
        unknown = set(names) - {stat.name for stat in stats}
        if unknown:
            raise SystemExit(f"--train: no dataset {sorted(unknown)} in this run")
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [plan.seed]
        runs = students(args.out, plan, cot, stats, names, seeds, steps, plan_steps, args.jobs)
        loads.append(os.getloadavg()[0])
        results = evaluate(args.out, plan, runs, f"{args.out / 'ingest-gold'}:test")
        loads.append(os.getloadavg()[0])
    print()
    print(report(args.out, stats, results, steps, plan.seed, started, loads))


if __name__ == "__main__":
    main()
