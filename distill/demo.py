"""`distill demo`: the whole toolkit on the embedded digits data, one stage after another.

ingest -> generate (built-in digit-reading teachers) -> filter (a dataset version) ->
stage 0 (pretrain the tiny vision tower on the training pool) -> train the students
(chain-of-thought, final answer only, and final answer only for the CoT student's time:
the direct student continued; ``--plan demo-full`` adds that control from scratch) side by
side, one process each, each evaluating its student on the held-out split once trained ->
compare, with a lineage check from every result back to the traces.

The plan is data (``data/demo.yaml``). Every stage writes into its own folder under OUT
and is resumable: an interrupted demo run again picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import Field, model_validator
from rich.table import Table

from distill.core.config_files import ConfigFile, KeyProblem, load_config_file
from distill.core.errors import DistillError
from distill.core.formatting import accuracy_interval, md_table
from distill.core.paths import DATA_DIR
from distill.core.progress import console

if TYPE_CHECKING:
    from distill.evaluate.seeds import SeedComparison

DEFAULT_PLAN = DATA_DIR / "demo.yaml"
QUICK_PLAN = DATA_DIR / "demo-quick.yaml"


class _Strict(ConfigFile):
    model_config = ConfigFile.model_config | {"strict": True}


class StudentPlan(_Strict):
    """One student: a train config from data/configs plus ``key=value`` overrides."""

    config: str
    set: dict[str, Any] = Field(default_factory=dict)
    note: str = ""
    # Another student of the plan, listed before this one: this student starts from that
    # one's final model of the same training seed and trains its own max_steps more, on the
    # batches that one did not reach (a warm restart: fresh optimizer, warm-up and decay).
    # Its budget in the report counts both runs' steps and seconds.
    continues: str | None = None


class DemoPlan(_Strict):
    seed: int = 0  # the data: the digits draw, the teachers' sampling, stage 0
    # Training seeds: every student is trained once per seed, and compared over them (a
    # from-scratch student moves with its seed more than the test items' interval shows).
    # Default: the plan's seed alone.
    seeds: list[int] | None = Field(default=None, min_length=1)
    counts: dict[str, int]
    categories: list[str]
    teachers: str = "digits"
    policy: str = "default"
    vision: str = "vision"
    vision_set: dict[str, Any] = Field(default_factory=dict)
    students: dict[str, StudentPlan]
    # Training runs at once, one process each (default: one per CPU core); each process gets
    # an equal share of the cores as threads (at least one).
    parallel: int | None = Field(default=None, ge=1)
    baseline: str
    eval_split: str = "test"
    decontaminate: list[str] = Field(default_factory=lambda: ["val", "test"])
    max_new_tokens: int = 96
    eval_batch_size: int = 64

    @model_validator(mode="after")
    def _baseline_is_a_student(self) -> DemoPlan:
        if self.baseline not in self.students:
            raise KeyProblem(("baseline",), f"baseline {self.baseline!r} is not one of the "
                                            f"students {sorted(self.students)}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise KeyProblem(("seeds",), f"repeated training seeds in {self.seeds}")
        names = list(self.students)
        for index, (name, student) in enumerate(self.students.items()):
            if student.continues is not None and student.continues not in names[:index]:
                raise KeyProblem(("students", name, "continues"),
                                 f"{student.continues!r} is not a student listed before "
                                 f"{name!r} (listed before: {names[:index]})")
        return self

    @property
    def training_seeds(self) -> list[int]:
        return self.seeds if self.seeds is not None else [self.seed]

    def runs(self) -> list[tuple[str, int]]:
        """Every (student, training seed), in the plan's order of students: list the
        longest first, so the queue ends on short runs and no core idles at the end."""
        return [(name, seed) for name in self.students for seed in self.training_seeds]


def load_plan(name_or_path: str | Path) -> DemoPlan:
    """A plan by path, or by name of a YAML file in data/ (``demo``, ``demo-quick``)."""
    return load_config_file(name_or_path, DATA_DIR, "demo plan", DemoPlan)[0]


@dataclass
class DemoRun:
    """Where everything goes, and how long each stage took in this invocation."""

    out: Path
    plan: DemoPlan
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ingest_dir(self) -> Path:
        return self.out / "ingest"

    @property
    def traces_dir(self) -> Path:
        return self.out / "traces"

    @property
    def store_dir(self) -> Path:
        return self.out / "datasets"

    def run_dir(self, name: str, seed: int) -> Path:
        return self.out / "runs" / name / f"seed-{seed}"

    def result_path(self, name: str, seed: int) -> Path:
        return self.out / "results" / name / f"seed-{seed}.json"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @contextmanager
    def stage(self, name: str, what: str):
        console.rule(f"[bold]{name}[/bold]: {what}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start


# --- stages ----------------------------------------------------------------------------------


def run_ingest(run: DemoRun) -> None:
    from distill.ingest.cli import print_summary
    from distill.ingest.pipeline import IngestOptions, ingest
    from distill.ingest.sources.digits import DigitsConfig, iter_digits

    if (run.ingest_dir / "manifest.json").exists():
        console.print(f"[dim]already done: {run.ingest_dir}")
        return
    config = DigitsConfig(seed=run.plan.seed, counts=run.plan.counts,
                          categories=tuple(run.plan.categories))
    summary = ingest(iter_digits(config), IngestOptions(out=run.ingest_dir, overwrite=True),
                     description="ingest digits", total=sum(config.counts.values()))
    print_summary(summary)


def run_generate(run: DemoRun) -> None:
    from distill.generate.cli import generate_with_progress
    from distill.generate.runner import GenerateOptions

    generate_with_progress(GenerateOptions(samples_dir=run.ingest_dir, out=run.traces_dir,
                                           teacher_set=run.plan.teachers, splits=("train",)))


def run_filter(run: DemoRun) -> Path:
    """Publish (or find, if already published) the dataset version; return its folder."""
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy
    from distill.filter.store import DatasetStore

    eval_sets = [f"{run.ingest_dir}:{split}" for split in run.plan.decontaminate]
    result = run_filter(FilterOptions(traces=run.traces_dir, store=run.store_dir,
                                      policy=load_policy(run.plan.policy), eval_sets=eval_sets))
    counts = result.manifest.counts
    console.print(f"dataset version [bold]{result.version[:16]}[/bold]: "
                  f"{counts.get('keep', 0):,} of {counts.get('input_traces', 0):,} traces kept; "
                  f"report {result.report}")
    return DatasetStore(run.store_dir).version_dir(result.version)


def student_config(name: str, overrides: dict[str, Any]):
    """A train config from data/configs with the plan's ``key: value`` overrides."""
    from distill.train.config import load_config

    return load_config(name, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def start_vision(run: DemoRun):
    """Stage 0 needs only the ingested training scans: it starts in a process of its own
    while generate and filter run here. None when it is already done."""
    from distill.train.checkpoint import is_finished
    from distill.train.parallel import TrainJob, start_job

    out = run.out / "runs" / "vision"
    if is_finished(out):
        return None
    config = student_config(run.plan.vision, {"seed": run.plan.seed, **run.plan.vision_set})
    return start_job(TrainJob("vision", config, Path("."), out))


def finish_vision(run: DemoRun, started) -> Path:
    from distill.core.shards import read_json_model
    from distill.schemas import RunManifest
    from distill.train.parallel import train_side_by_side

    out = run.out / "runs" / "vision"
    if started is None:
        console.print(f"[dim]already done: {out}")
    else:
        train_side_by_side([], 1, [started])
        metrics = read_json_model(out / "manifest.json", RunManifest).metrics
        console.print(f"vision tower: cell accuracy on the val pool "
                      f"{metrics['val_cell_accuracy']:.3f} ({metrics['seconds']:.0f} s)")
    return out / "final"


def run_students(run: DemoRun, dataset: Path, vision: Path) -> None:
    """Every student, once per training seed, ``student_processes`` at a time, one process
    each (longest runs first: the plan lists them so). Each process then evaluates its
    student, so the evals overlap the other students' training; the eval stage finds their
    generations in the cache."""
    from distill.train.checkpoint import is_finished
    from distill.train.parallel import TrainJob, train_side_by_side

    processes, threads = student_processes(run.plan)
    jobs = []
    for name, seed in run.plan.runs():
        out = run.run_dir(name, seed)
        if is_finished(out):
            console.print(f"[dim]already done: {out}")
            continue
        student = run.plan.students[name]
        overrides = {"vision_path": str(vision), "seed": seed, "threads": threads, **student.set}
        needs: tuple[str, ...] = ()
        if student.continues is not None:
            overrides |= continuation(run, student.continues, seed)
            needs = (_job_name(student.continues, seed),)
        jobs.append(TrainJob(_job_name(name, seed), student_config(student.config, overrides),
                             dataset, out, after=partial(run_eval, run, name, seed),
                             needs=needs))
    train_side_by_side(jobs, processes)
    for name in run.plan.students:
        budgets = [total_budget(run, name, seed) for seed in run.plan.training_seeds]
        console.print(f"{name}: {budgets[0]['steps']:.0f} steps in "
                      f"{' / '.join(str(round(b['train_s'])) for b in budgets)} s (each seed), "
                      f"{_mean(b['tokens_per_s'] for b in budgets):,.0f} real tokens/s")


def continuation(run: DemoRun, parent: str, seed: int) -> dict[str, Any]:
    """The overrides of a student that continues ``parent``'s model of this seed: start from
    its final model, on the batches after the ones it trained on."""
    plan = run.plan.students[parent]
    steps = student_config(plan.config, plan.set).max_steps
    if steps is None:
        raise DistillError(f"a student continues {parent!r}, whose config sets no max_steps: "
                           "where its data order stopped is unknown")
    return {"init": str(run.run_dir(parent, seed) / "final"), "data_start": steps}


def _job_name(student: str, seed: int) -> str:
    return f"{student} seed {seed}"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def student_processes(plan: DemoPlan) -> tuple[int, int]:
    """(processes at once, threads each): one training run per core by default (a second
    process keeps a second core busy, where a second thread mostly waits), cores shared
    out evenly when fewer processes are asked for."""
    cores = os.cpu_count() or 1
    processes = max(1, min(plan.parallel or cores, len(plan.runs())))
    return processes, max(1, cores // processes)


def run_eval(run: DemoRun, name: str, seed: int) -> Path:
    from distill.core.evalsets import load_eval_set
    from distill.core.predictors import PredictorOptions
    from distill.core.shards import read_json_model, write_json_atomic
    from distill.evaluate.results import portable
    from distill.evaluate.runner import evaluate_model
    from distill.schemas import RunManifest
    from distill.train.config import TrainConfig

    run_dir = run.run_dir(name, seed)
    manifest = read_json_model(run_dir / "manifest.json", RunManifest)
    mode = TrainConfig.model_validate(manifest.config).prompt_mode()
    eval_set = load_eval_set(f"{run.ingest_dir}:{run.plan.eval_split}")
    options = PredictorOptions(batch_size=run.plan.eval_batch_size,
                               max_new_tokens=run.plan.max_new_tokens)
    # Small batched decoding: one thread is fastest on small CPUs.
    [(_, evaluated)] = evaluate_model(f"siqvl:{run_dir}", options, [eval_set], [mode],
                                      cache_dir=run.out / "eval-cache", threads=1)
    result = evaluated.result
    path = run.result_path(name, seed)
    write_json_atomic(path, portable(result, path.parent))  # paths relative: the demo moves
    metrics = result.metrics
    console.print(f"{name} seed {seed}: {accuracy_interval(metrics, unit='%')} on "
                  f"{metrics['n']:.0f} {run.plan.eval_split} items ({mode})")
    return path


def run_compare(run: DemoRun) -> tuple[dict[str, Path], SeedComparison]:
    """Item by item for the first training seed (flips, images), and every student over
    all seeds (mean, each seed, two-level intervals, paired test across seeds)."""
    from distill.evaluate.compare import compare_results, load_results
    from distill.evaluate.report import print_comparison, write_reports
    from distill.evaluate.seed_report import print_seeds
    from distill.evaluate.seeds import compare_groups, named_groups

    names = list(run.plan.students)
    first = run.plan.training_seeds[0]
    results = load_results([run.result_path(name, first) for name in names])
    comparison = compare_results(results, baseline=names.index(run.plan.baseline))
    seeds = compare_groups(named_groups({name: [run.result_path(name, seed)
                                                for seed in run.plan.training_seeds]
                                         for name in names}),
                           baseline=names.index(run.plan.baseline))
    print_comparison(comparison, console)
    print_seeds(seeds, console)
    return write_reports(comparison, run.report_dir, seeds=seeds), seeds


def check_lineage(run: DemoRun) -> list[str]:
    """Every result must trace back, unbroken, to the traces and the ingested samples."""
    from distill.evaluate.lineage import trace_lineage

    lines = []
    for name, seed in run.plan.runs():
        links = trace_lineage(run.result_path(name, seed))
        broken = [f"{link.kind}: {'; '.join(link.problems)}" for link in links
                  if link.status == "broken"]
        if broken:
            raise DistillError(f"lineage of {name} seed {seed} is broken: {broken}")
        chain = " -> ".join(link.kind for link in links if link.status == "ok")
        lines.append(f"{name} seed {seed}: {chain}")
    return lines


# --- the report ------------------------------------------------------------------------------


def student_budget(run_dir: Path) -> dict[str, float]:
    """Steps, examples, tokens, training seconds and real tokens/s of a finished run (from
    its logs)."""
    from distill.core.shards import read_json_model
    from distill.schemas import RunManifest

    manifest = read_json_model(run_dir / "manifest.json", RunManifest)
    last: dict[str, Any] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        lines = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line]
        last = json.loads(lines[-1]) if lines else {}
    tokens, seconds = float(last.get("tokens_seen", 0)), float(last.get("elapsed_s", 0.0))
    # The rate over the steps themselves (the loop's own figure; a resumed run's elapsed
    # time covers only its last invocation)
    rate = manifest.metrics.get("tokens_per_s") or (tokens / seconds if seconds else 0.0)
    return {"steps": manifest.steps, "examples": manifest.examples_seen, "tokens": tokens,
            "train_s": seconds, "tokens_per_s": float(rate)}


def total_budget(run: DemoRun, name: str, seed: int) -> dict[str, float]:
    """A student's budget with the runs it continues added in: what its model cost."""
    budget = student_budget(run.run_dir(name, seed))
    parent = run.plan.students[name].continues
    if parent is None:
        return budget
    before = total_budget(run, parent, seed)
    added = {key: budget[key] + before[key] for key in ("steps", "examples", "tokens",
                                                           "train_s")}
    return {**added, "tokens_per_s": added["tokens"] / added["train_s"]
            if added["train_s"] else budget["tokens_per_s"]}


def write_demo_summary(run: DemoRun, dataset: Path, reports: dict[str, Path],
                       seeds: SeedComparison, lineage: list[str]) -> Path:
    from distill.evaluate.seed_report import each_seed, pair_rows, seed_interval

    rows = []
    for summary in seeds.summaries:
        name = summary.group.label
        budgets = [total_budget(run, name, seed) for seed in run.plan.training_seeds]
        rows.append([name, seed_interval(summary.accuracy), each_seed(summary.accuracy),
                     f"{budgets[0]['steps']:.0f}", f"{budgets[0]['examples']:,.0f}",
                     f"{_mean(b['train_s'] for b in budgets):.0f}",
                     f"{_mean(b['tokens_per_s'] for b in budgets):,.0f}",
                     run.plan.students[name].note])
    stage_rows = [[stage, f"{seconds:.1f}"] for stage, seconds in run.timings.items()]
    seed_list = ", ".join(map(str, run.plan.training_seeds))
    text = "\n".join([
        "# distill demo", "",
        f"Eval split: `{run.plan.eval_split}` of the digits set "
        f"(categories: {', '.join(run.plan.categories)}); dataset version `{dataset.name}`; "
        f"every student trained with seeds {seed_list}.",
        "", "Accuracy %: mean over seeds [95% two-level bootstrap interval: seeds, then "
            "items], and each seed's value.", "",
        md_table(["student", "mean accuracy % [95% CI]", "each seed %", "steps", "examples",
                  "train s (mean)", "tokens/s", "note"], rows), "",
        md_table(*pair_rows(seeds)), "",
        "Reports: " + ", ".join(f"[{kind}]({path.name})" for kind, path in reports.items()),
        "", "## Lineage (every result back to the ingested samples)", "",
        *[f"- {line}" for line in lineage], "",
        "## Wall-clock per stage (this invocation; a resumed stage shows its remaining time)",
        "", md_table(["stage", "seconds"], stage_rows), "",
    ])
    path = run.report_dir / "demo.md"
    path.write_text(text, encoding="utf-8")
    return path


def print_budgets(run: DemoRun) -> None:
    table = Table(title="students' training budgets (per seed)")
    for column in ("student", "seed", "steps", "examples", "real tokens", "train s",
                   "tokens/s", "note"):
        table.add_column(column, justify="left" if column in ("student", "note") else "right")
    for name, seed in run.plan.runs():
        b = total_budget(run, name, seed)
        table.add_row(name, str(seed), f"{b['steps']:.0f}", f"{b['examples']:,.0f}",
                      f"{b['tokens']:,.0f}", f"{b['train_s']:.0f}", f"{b['tokens_per_s']:,.0f}",
                      run.plan.students[name].note)
    console.print(table)


# --- the command -----------------------------------------------------------------------------


def run_demo(out: Path, plan: DemoPlan) -> Path:
    """Run every stage (skipping finished ones); return the demo summary's path."""
    run = DemoRun(out=out, plan=plan)
    with run.stage("ingest", "the digits set, built offline from scikit-learn's scans"):
        run_ingest(run)
    vision_job = start_vision(run)
    try:
        with run.stage("generate", f"teachers of data/teachers/{plan.teachers}.yaml"
                                   + (" (stage 0 trains meanwhile)" if vision_job else "")):
            run_generate(run)
        with run.stage("filter", f"score, dedup, decontaminate; policy {plan.policy}"):
            dataset = run_filter(run)
        with run.stage("stage 0", "pretrain the vision tower on the training pool's digits"):
            vision = finish_vision(run, vision_job)
    finally:
        if vision_job is not None:
            vision_job.stop()  # on an error above; a no-op once it has finished
    processes, threads = student_processes(plan)
    seeds = ", ".join(map(str, plan.training_seeds))
    with run.stage("train students", f"{', '.join(plan.students)}, seeds {seeds}: "
                                     f"{processes} at once, one process each, {threads} "
                                     "thread(s) each"):
        run_students(run, dataset, vision)
    with run.stage("eval", f"every student and seed on the held-out {plan.eval_split} split"):
        for name, seed in plan.runs():
            run_eval(run, name, seed)
    with run.stage("compare", "over seeds and items; flipped items and paired tests"):
        reports, seed_comparison = run_compare(run)
        print_budgets(run)
    lineage = check_lineage(run)
    summary = write_demo_summary(run, dataset, reports, seed_comparison, lineage)
    console.print(f"\n[bold green]report:[/bold green] {run.report_dir}  "
                  f"(demo.md, {', '.join(p.name for p in reports.values())})")
    return summary


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where every stage writes.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Demo plan YAML (default: {DEFAULT_PLAN.relative_to(DATA_DIR.parent)}).")
@click.option("--quick", is_flag=True,
              help="A small plan that finishes in a minute or two (smoke test, not a result).")
def demo_command(out: Path, plan_path: Path | None, quick: bool) -> None:
    """Run the whole pipeline on the embedded digits data (no downloads) and compare a
    chain-of-thought student with direct-answer students."""
    plan = load_plan(plan_path or (QUICK_PLAN if quick else DEFAULT_PLAN))
    started = time.perf_counter()
    run_demo(out, plan)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")

