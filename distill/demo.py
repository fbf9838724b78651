"""`distill demo`: the whole toolkit on the embedded digits data, one stage after another.

ingest -> generate (built-in digit-reading teachers) -> filter (a dataset version) ->
stage 0 (pretrain the tiny vision tower on the training pool) -> train the students
(chain-of-thought, final answer only, and final answer only for the CoT student's time:
the direct student continued; ``--plan demo-full`` adds that control from scratch) side by
side, one process each, each evaluating its student on the held-out split once trained ->
compare beside the teachers (evaluated through their engines on the same items), with a
lineage check from every result back to the traces.

A plan may add rounds (``rounds:``; ``data/demo-rounds.yaml``): a trained student of the
plan becomes the next teacher. Each training seed's model samples the training pool, the
judge keeps what it got right, a child dataset version holds the data that student was
trained on plus those traces, and students that name the round (``data: ROUND``) train on
it, each seed on its own seed's version.

The plan is data (``data/demo.yaml``). Every stage writes into its own folder under OUT
and is resumable: an interrupted demo run again picks up where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
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
    # A round of the plan: train on its child dataset version (each training seed on the
    # version its own seed's teacher wrote) instead of the plan's dataset.
    data: str | None = None
    # Other students this one is compared with, seed by seed, besides the baseline (a
    # round-2 student against round 1 trained for as long)
    compare_with: list[str] = Field(default_factory=list)


class RoundPlan(_Strict):
    """A round of self-distillation: ``student``'s model of each training seed samples the
    training pool (``k`` samples an item at ``temperature``), the filter judges the samples
    (``policy``: against gold, or ``consensus`` where there is none) and publishes a child
    version of the data that student trained on (``keep_parent: false``: the student's
    own data alone)."""

    student: str
    k: int = Field(default=4, ge=1, le=64)
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    items: int | None = Field(default=None, ge=1)  # a seeded draw of the pool; None: all
    only_wrong: bool = False  # sample only the items the student gets wrong at greedy
    policy: str = "default"
    keep_parent: bool = True
    batch_size: int = Field(default=512, ge=1)  # rows (item x sample) a generate call


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
    rounds: dict[str, RoundPlan] = Field(default_factory=dict)
    # Evaluate the teachers of the teacher set on the eval split (greedy, with the same
    # judge and eval cache as the students), to show each student's share of the best.
    eval_teachers: bool = True

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
            for other in student.compare_with:
                if other not in self.students or other == name:
                    raise KeyProblem(("students", name, "compare_with"),
                                     f"{other!r} is not another student of the plan")
            if student.data is None:
                continue
            if student.data not in self.rounds:
                raise KeyProblem(("students", name, "data"),
                                 f"{student.data!r} is not a round of the plan (rounds: "
                                 f"{sorted(self.rounds)})")
            teacher = self.rounds[student.data].student
            if teacher not in names[:index]:
                raise KeyProblem(("students", name, "data"),
                                 f"round {student.data!r} is taught by {teacher!r}, which "
                                 f"must be a student listed before {name!r}")
        for name, round_plan in self.rounds.items():
            if round_plan.student not in self.students:
                raise KeyProblem(("rounds", name, "student"),
                                 f"{round_plan.student!r} is not one of the students "
                                 f"{sorted(self.students)}")
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

    def teacher_result_path(self, teacher_id: str) -> Path:
        return self.out / "teacher-results" / f"{teacher_id}.json"

    def round_dir(self, name: str, seed: int | None = None) -> Path:
        folder = self.out / "rounds" / name
        return folder if seed is None else folder / f"seed-{seed}"

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


def run_students(run: DemoRun, names: list[str], data_of: Callable[[str, int], Path],
                 vision: Path) -> None:
    """The named students, once per training seed, ``student_processes`` at a time, one
    process each (longest runs first: the plan lists them so), each on ``data_of(name,
    seed)``. Each process then evaluates its student, so the evals overlap the other
    students' training; the eval stage finds their generations in the cache."""
    from distill.train.checkpoint import is_finished
    from distill.train.parallel import TrainJob, train_side_by_side

    processes, threads = student_processes(run.plan)
    jobs = []
    for name, seed in run.plan.runs():
        if name not in names:
            continue
        out = run.run_dir(name, seed)
        if is_finished(out):
            console.print(f"[dim]already done: {out}")
            continue
        student = run.plan.students[name]
        overrides = {"vision_path": str(vision), "seed": seed, "threads": threads, **student.set}
        needs: tuple[str, ...] = ()
        if student.continues is not None:
            overrides |= continuation(run, name, seed)
            needs = (_job_name(student.continues, seed),)
        jobs.append(TrainJob(_job_name(name, seed), student_config(student.config, overrides),
                             data_of(name, seed), out, after=partial(run_eval, run, name, seed),
                             needs=needs))
    train_side_by_side(jobs, processes)
    for name in names:
        budgets = [total_budget(run, name, seed) for seed in run.plan.training_seeds]
        console.print(f"{name}: {budgets[0]['steps']:.0f} steps in "
                      f"{' / '.join(str(round(b['train_s'])) for b in budgets)} s (each seed), "
                      f"{_mean(b['tokens_per_s'] for b in budgets):,.0f} real tokens/s")


def continuation(run: DemoRun, name: str, seed: int) -> dict[str, Any]:
    """The overrides of a student that continues another's model of this seed: start from
    its final model; on the same data, at the batch after the last one it trained on (on
    another round's data, from that data's first batch)."""
    student = run.plan.students[name]
    parent = student.continues
    assert parent is not None
    plan = run.plan.students[parent]
    if student.data != plan.data:
        return {"init": str(run.run_dir(parent, seed) / "final"), "data_start": 0}
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


# --- rounds: a trained student as the next teacher ---------------------------------------------


def run_round(run: DemoRun, name: str, seed: int, parent_data: Path) -> Path:
    """One training seed of a round: that seed's model of the round's student samples the
    pool (first, with ``only_wrong``, only the items it gets wrong at greedy), the filter
    judges the samples and publishes a child of ``parent_data`` (the version the student
    trained on). Returns the child version's folder; a finished round is found, not redone
    (its record ``round.json`` keeps what it cost)."""
    from distill.core.shards import read_json_model, write_json_atomic
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy
    from distill.filter.store import DatasetStore
    from distill.generate.cli import generate_with_progress
    from distill.generate.runner import GenerateOptions
    from distill.schemas import DatasetManifest

    plan = run.plan.rounds[name]
    folder = run.round_dir(name, seed)
    store = DatasetStore(run.store_dir)
    done = read_round(run, name, seed)
    if done is not None and (store.version_dir(done["version"]) / "manifest.json").is_file():
        console.print(f"[dim]already done: {folder}")
        return store.version_dir(done["version"])
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    pool, items = round_pool(run, name)
    record: dict[str, Any] = {"round": name, "seed": seed, "pool_items": items,
                              "teacher": str(run.run_dir(plan.student, seed) / "final")}
    _one_thread()
    parent_manifest = read_json_model(parent_data / "manifest.json", DatasetManifest)
    if plan.only_wrong:
        wrong = greedy_misses(run, name, seed, pool)
        record["wrong_at_greedy"] = len(wrong)
        seconds["greedy"] = time.perf_counter() - started
        if not wrong:  # nothing to learn from itself: the round's data is its parent's
            console.print(f"round {name} seed {seed}: the student gets every pool item "
                          "right at greedy; its data stays the parent version")
            record.update(version=parent_manifest.version, parent=None,
                          counts={**parent_manifest.counts, "keep": 0, "input_traces": 0},
                          seconds=seconds)
            write_json_atomic(folder / "round.json", record)
            return parent_data
        pool = write_pool(folder / "pool", wrong, pool)
    teachers = write_round_teachers(run, name, seed)
    started = time.perf_counter()
    generate_with_progress(GenerateOptions(samples_dir=pool, out=folder / "traces",
                                           teacher_set=str(teachers), splits=("train",)))
    seconds["sample"] = time.perf_counter() - started
    started = time.perf_counter()
    parent = parent_manifest.version
    result = run_filter(FilterOptions(
        traces=folder / "traces", store=run.store_dir, policy=load_policy(plan.policy),
        parent=parent if plan.keep_parent else None,
        eval_sets=[f"{run.ingest_dir}:{split}" for split in run.plan.decontaminate]))
    seconds["filter"] = time.perf_counter() - started
    record.update(version=result.version, parent=parent if plan.keep_parent else None,
                  counts=result.manifest.counts, seconds=seconds)
    write_json_atomic(folder / "round.json", record)
    counts = result.manifest.counts
    console.print(f"round {name} seed {seed}: {counts.get('input_traces', 0):,} samples, "
                  f"{counts.get('correctness:correct', 0):,} right, {counts.get('keep', 0):,} "
                  f"kept beside {counts.get('kept_parent', 0):,} rows of the parent: version "
                  f"[bold]{result.version[:16]}[/bold]")
    return store.version_dir(result.version)


def read_round(run: DemoRun, name: str, seed: int) -> dict[str, Any] | None:
    """What a finished round recorded (None before it has finished)."""
    path = run.round_dir(name, seed) / "round.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not isinstance(record.get("version"), str):
        raise DistillError(f"{path}: not a round record (no version); remove it to redo "
                           "the round")
    return record


def _one_thread() -> None:
    """Small batched decoding on a small or busy CPU: one thread is fastest (a second one
    mostly waits, and under contention OpenMP's waiting threads slow everything)."""
    import torch

    torch.set_num_threads(1)


def round_pool(run: DemoRun, name: str) -> tuple[Path, int]:
    """The ingest folder the round samples (its train split) and its number of items: the
    demo's own for the whole pool, else a seeded draw of ``items`` of it, ingested once."""
    from distill.core.evalsets import load_eval_set

    plan = run.plan.rounds[name]
    train = load_eval_set(f"{run.ingest_dir}:train", verify=False)
    if plan.items is None or plan.items >= len(train.samples):
        return run.ingest_dir, len(train.samples)
    chosen = random.Random(run.plan.seed).sample(list(train.samples), plan.items)
    return write_pool(run.round_dir(name) / "pool", sorted(chosen, key=lambda s: s.id),
                      run.ingest_dir), plan.items


def write_pool(out: Path, samples: list, source: Path) -> Path:
    """Some samples of the ingest folder ``source`` as an ingest folder of their own (the
    same ids, contents and images), for the generate stage to sample."""
    from distill.core.evalsets import load_eval_set
    from distill.ingest.pipeline import IngestOptions, ingest
    from distill.ingest.sources.base import RawItem

    if (out / "manifest.json").is_file():
        return out
    root = load_eval_set(f"{source}:train", verify=False).image_root
    fields = {"id", "question", "answer", "choices", "answer_type", "category", "source",
              "split", "meta"}
    rows = (RawItem(fields=sample.model_dump(mode="json", include=fields), file=str(source),
                    line=index, image_path=sample.image.path, image_root=root)
            for index, sample in enumerate(samples))
    ingest(rows, IngestOptions(out=out, overwrite=True, inputs=(source,),
                               source_config={"pool of": str(source), "items": len(samples)}),
           description=f"pool {out.name}", total=len(samples))
    return out


def greedy_misses(run: DemoRun, name: str, seed: int, pool: Path) -> list:
    """The pool's items the round's student (this seed's model) gets wrong at greedy, from
    an eval of it on the pool (written beside the round: ``greedy.json``)."""
    from distill.core.evalsets import load_eval_set
    from distill.core.predictors import PredictorOptions
    from distill.core.shards import write_json_atomic
    from distill.evaluate.runner import evaluate_model

    plan = run.plan.rounds[name]
    eval_set = load_eval_set(f"{pool}:train")
    options = PredictorOptions(batch_size=run.plan.eval_batch_size,
                               max_new_tokens=run.plan.max_new_tokens)
    mode = student_mode(run, plan.student, seed)
    [(_, evaluated)] = evaluate_model(f"siqvl:{run.run_dir(plan.student, seed)}", options,
                                      [eval_set], [mode], cache_dir=run.out / "eval-cache",
                                      threads=1)
    write_json_atomic(run.round_dir(name, seed) / "greedy.json", evaluated.result)
    wrong = {item.sample_id for item in evaluated.result.items
             if item.correctness != "correct"}
    return [sample for sample in eval_set.samples if sample.id in wrong]


def student_mode(run: DemoRun, name: str, seed: int):
    from distill.core.shards import read_json_model
    from distill.schemas import RunManifest
    from distill.train.config import TrainConfig

    manifest = read_json_model(run.run_dir(name, seed) / "manifest.json", RunManifest)
    return TrainConfig.model_validate(manifest.config).prompt_mode()


def write_round_teachers(run: DemoRun, name: str, seed: int) -> Path:
    """The round's teacher set: this seed's model of the round's student, through the
    ``hf`` engine, asked with its own prompt (the teacher set leaves it out), k samples an
    item. Its traces name the checkpoint; lineage follows them back."""
    import yaml

    from distill.core.shards import write_bytes_atomic

    plan = run.plan.rounds[name]
    teacher_id = f"{plan.student}-seed-{seed}"
    document = {"teachers": {teacher_id: {
        "engine": "hf", "model": str(run.run_dir(plan.student, seed).resolve()), "k": plan.k,
        "sampling": {"temperature": plan.temperature, "top_p": plan.top_p,
                     "max_tokens": run.plan.max_new_tokens, "seed": seed},
        "batch_size": max(1, plan.batch_size // plan.k),
        "options": {"micro_batch_size": plan.batch_size}}},
        "routing": {"default": [teacher_id]}}
    path = run.round_dir(name, seed) / "teachers.yaml"
    text = f"# Written by distill demo: round {name!r}, training seed {seed}.\n"
    write_bytes_atomic(path, (text + yaml.safe_dump(document, sort_keys=False)).encode())
    return path


def run_teacher_evals(run: DemoRun) -> list[Path]:
    """Every teacher of the plan's teacher set on the eval split, through its engine,
    greedy, scored by the same judge with the same eval cache as the students: the
    students' yardstick. Cheap on the built-in teachers (a few seconds): the demo runs it
    while stage 0 still trains in its own process."""
    from distill.core.evalsets import load_eval_set
    from distill.core.predictors import PredictorOptions
    from distill.core.shards import write_json_atomic
    from distill.evaluate.runner import evaluate_model
    from distill.generate.teachers import load_teacher_set

    if not run.plan.eval_teachers:
        return []
    eval_set = load_eval_set(f"{run.ingest_dir}:{run.plan.eval_split}")
    options = PredictorOptions(batch_size=run.plan.eval_batch_size,
                               max_new_tokens=run.plan.max_new_tokens)
    paths = []
    for teacher_id in load_teacher_set(run.plan.teachers).teachers:
        [(_, evaluated)] = evaluate_model(f"engine:{run.plan.teachers}#{teacher_id}", options,
                                          [eval_set], ["cot"], cache_dir=run.out / "eval-cache",
                                          threads=1)
        path = run.teacher_result_path(teacher_id)
        write_json_atomic(path, evaluated.result)
        metrics = evaluated.result.metrics
        console.print(f"teacher {teacher_id}: {accuracy_interval(metrics, unit='%')} on "
                      f"{metrics['n']:.0f} {run.plan.eval_split} items")
        paths.append(path)
    return paths


def run_compare(run: DemoRun) -> tuple[dict[str, Path], SeedComparison]:
    """Item by item for the first training seed (flips, images), and every student over
    all seeds (mean, each seed, two-level intervals, paired test across seeds)."""
    from distill.evaluate.compare import compare_results, load_results
    from distill.evaluate.report import print_comparison, write_reports
    from distill.evaluate.seed_report import print_seeds
    from distill.evaluate.seeds import compare_groups, named_groups, pair_groups

    names = list(run.plan.students)
    first = run.plan.training_seeds[0]
    # Named by what they are: the plan's recipe and the seed (two students of one config
    # are told apart by their names, not by their folders)
    results = load_results([run.result_path(name, first) for name in names],
                           labels=[f"{name} seed {first}" for name in names])
    teachers = teacher_results(run)
    comparison = compare_results(results, baseline=names.index(run.plan.baseline),
                                 teachers=teachers)
    groups = named_groups({name: [run.result_path(name, seed)
                                  for seed in run.plan.training_seeds] for name in names})
    seeds = compare_groups(groups, baseline=names.index(run.plan.baseline), teachers=teachers)
    for index, name in enumerate(names):  # the plan's other pairs, after the baseline's
        for other in run.plan.students[name].compare_with:
            seeds.pairs.append(pair_groups(groups[names.index(other)], groups[index]))
    print_comparison(comparison, console)
    print_seeds(seeds, console)
    return write_reports(comparison, run.report_dir, seeds=seeds), seeds


def teacher_results(run: DemoRun) -> list:
    """The teachers' results written by ``run_teacher_evals`` (labelled by teacher id)."""
    from distill.evaluate.compare import load_results

    if not run.plan.eval_teachers:
        return []
    from distill.generate.teachers import load_teacher_set

    ids = list(load_teacher_set(run.plan.teachers).teachers)
    return load_results([run.teacher_result_path(tid) for tid in ids], labels=ids)


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
        chain = " -> ".join(link.kind for link in links if link.status == "ok" and not link.depth)
        deeper = [link for link in links if link.depth and link.status == "ok"]
        if deeper:  # a later round: what its data was built on, followed to the first traces
            chain += (f"; and {len(deeper)} links further in: "
                      + " -> ".join(link.kind for link in deeper))
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
    from distill.evaluate.seed_report import each_seed, pair_rows, seed_interval, teacher_label

    best = seeds.best_teacher
    rows = []
    for summary in seeds.summaries:
        name = summary.group.label
        budgets = [total_budget(run, name, seed) for seed in run.plan.training_seeds]
        rows.append([name, seed_interval(summary.accuracy), each_seed(summary.accuracy),
                     *([seed_interval(summary.share) if summary.share else "-"] if best else []),
                     f"{budgets[0]['steps']:.0f}", f"{budgets[0]['examples']:,.0f}",
                     f"{_mean(b['train_s'] for b in budgets):.0f}",
                     f"{_mean(b['tokens_per_s'] for b in budgets):,.0f}",
                     run.plan.students[name].note])
    for teacher in seeds.teachers:
        rows.append([teacher_label(teacher), seed_interval(teacher.accuracy), "-",
                     *(["100.0" if teacher.best else "-"] if best else []), "-", "-", "-", "-",
                     f"teacher of the traces, through its engine "
                     f"({teacher.loaded.result.generation.get('engine')}), greedy"])
    header = ["model", "mean accuracy % [95% CI]", "each seed %",
              *([f"share of the best teacher ({best.label}) % [95% CI]"] if best else []),
              "steps", "examples", "train s (mean)", "tokens/s", "note"]
    stage_rows = [[stage, f"{seconds:.1f}"] for stage, seconds in run.timings.items()]
    seed_list = ", ".join(map(str, run.plan.training_seeds))
    text = "\n".join([
        "# distill demo", "",
        f"Eval split: `{run.plan.eval_split}` of the digits set "
        f"(categories: {', '.join(run.plan.categories)}); dataset version `{dataset.name}`; "
        f"every student trained with seeds {seed_list}.",
        "", "Accuracy %: mean over seeds [95% two-level bootstrap interval: seeds, then "
            "items], and each seed's value. Teachers: one greedy run each on the same items, "
            "the same judge; their interval covers the items only. A student's share of the "
            "best teacher: its mean accuracy over that teacher's, with the two-level interval "
            "(one item resample for both).", "",
        md_table(header, rows), "",
        md_table(*pair_rows(seeds)), "",
        *error_lines(run),
        *round_lines(run),
        "Reports: " + ", ".join(f"[{kind}]({path.name})" for kind, path in reports.items()),
        "", "## Lineage (every result back to the ingested samples)", "",
        *[f"- {line}" for line in lineage], "",
        "## Wall-clock per stage (this invocation; a resumed stage shows its remaining time)",
        "", md_table(["stage", "seconds"], stage_rows), "",
    ])
    path = run.report_dir / "demo.md"
    path.write_text(text, encoding="utf-8")
    return path


def _eval_samples(run: DemoRun) -> dict[str, Any]:
    from distill.core.evalsets import load_eval_set

    eval_set = load_eval_set(f"{run.ingest_dir}:{run.plan.eval_split}", verify=False)
    return eval_set.by_id


def _error_kinds(path: Path, samples: dict[str, Any]) -> dict[str, str]:
    """Each item's outcome in one result: ``right`` or why it is wrong."""
    from distill.core.digits import error_kind
    from distill.core.shards import read_json_model
    from distill.schemas import EvalResult

    result = read_json_model(path, EvalResult)
    return {item.sample_id: "right" if item.correctness == "correct"
            else error_kind(samples[item.sample_id], item.raw_output)
            for item in result.items}


def error_lines(run: DemoRun) -> list[str]:
    """Where the students go wrong (sum questions of the digits set: the digits they list
    are not the image's, or the right digits summed wrong), and, for a student compared
    with another, which errors it fixed and which it made new."""
    from distill.core.digits import ERROR_KINDS

    if "sum" not in run.plan.categories:
        return []
    samples = _eval_samples(run)
    seeds = run.plan.training_seeds
    kinds = {(name, seed): _error_kinds(run.result_path(name, seed), samples)
             for name, seed in run.plan.runs()}
    rows = []
    for name in run.plan.students:
        counts = [Counter(kinds[(name, seed)].values()) for seed in seeds]
        rows.append([name, *(" / ".join(str(c[kind]) for c in counts) for kind in ERROR_KINDS)])
    for teacher in teacher_results(run):
        counts = Counter(_error_kinds(teacher.path, samples).values())
        rows.append([f"teacher {teacher.label}", *(str(counts[kind]) for kind in ERROR_KINDS)])
    lines = ["## Where the students go wrong", "",
             "Wrong answers on the eval split, each seed's count (a teacher's: its one run): "
             "the digits the answer lists are not the image's (misread), the right digits with "
             "a wrong result (arithmetic), no digit list at all (other: a direct answer, or an "
             "unparseable one).", "",
             md_table(["student", *(f"{kind} (each seed)" for kind in ERROR_KINDS)], rows), ""]
    changes = []
    for name, student in run.plan.students.items():
        for before in dict.fromkeys([student.continues, *student.compare_with]):
            if before is None:
                continue
            fixed, new = Counter(), Counter()
            for seed in seeds:
                a, b = kinds[(before, seed)], kinds[(name, seed)]
                for sample_id, outcome in a.items():
                    if outcome != "right" and b.get(sample_id) == "right":
                        fixed[outcome] += 1
                    elif outcome == "right" and b.get(sample_id, "right") != "right":
                        new[b[sample_id]] += 1
            changes.append([f"{name} against {before}",
                            *(f"{fixed[kind]} / {new[kind]}" for kind in ERROR_KINDS)])
    if changes:
        lines += ["What a student fixed and broke against the one it continues or is compared "
                  "with (items, summed over seeds: wrong before and right now / right before "
                  "and wrong now, by the kind of error):", "",
                  md_table(["student", *ERROR_KINDS], changes), ""]
    return lines


def round_lines(run: DemoRun) -> list[str]:
    """Each round: what the student sampled, what the judge kept, the child version's
    rows by source, and what it cost."""
    lines: list[str] = []
    for name, plan in run.plan.rounds.items():
        rows = []
        for seed in run.plan.training_seeds:
            record = read_round(run, name, seed)
            if record is None:
                continue
            counts, seconds = record["counts"], record.get("seconds", {})
            total = counts.get("kept", 0)
            student = counts.get(f"kept_by_teacher:{plan.student}-seed-{seed}", 0)
            rows.append([str(seed), f"{record['pool_items']:,}",
                         f"{record['wrong_at_greedy']:,}" if "wrong_at_greedy" in record else "-",
                         f"{counts.get('input_traces', 0):,}",
                         f"{counts.get('correctness:correct', 0):,}", f"{counts.get('keep', 0):,}",
                         f"{total:,}", f"{100 * student / total:.1f}" if total else "-",
                         " / ".join(f"{seconds.get(k, 0):.0f}" for k in ("greedy", "sample",
                                                                        "filter")),
                         f"`{record['version'][:12]}`"])
        lines += [f"## Round `{name}`: `{plan.student}` as the next teacher", "",
                  f"Each seed's `{plan.student}` model samples {plan.k} outputs an item at "
                  f"temperature {plan.temperature} on "
                  + (f"a draw of {plan.items:,} training items" if plan.items
                     else "the training pool")
                  + (", only the items it gets wrong at greedy" if plan.only_wrong else "")
                  + f"; policy `{plan.policy}` judges them; the child version holds "
                  + ("the data it was trained on plus what was kept."
                     if plan.keep_parent else "only what was kept."), "",
                  md_table(["seed", "pool items", "wrong at greedy", "samples scored",
                            "right", "kept (new rows)", "rows in the version",
                            "the student's share %", "seconds: greedy / sample / filter",
                            "version"], rows), ""]
    return lines


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


def train_all(run: DemoRun, dataset: Path, vision: Path) -> None:
    """The students in phases: those on the plan's dataset first; then each round whose
    student is trained, then the students on that round's data; until none is left."""
    plan = run.plan
    versions: dict[tuple[str, int], Path] = {}

    def data_of(name: str, seed: int) -> Path:
        data = plan.students[name].data
        return dataset if data is None else versions[(data, seed)]

    trained: set[str] = set()
    rounds = list(plan.rounds)
    processes, threads = student_processes(plan)
    seeds = ", ".join(map(str, plan.training_seeds))
    while True:
        ready = [name for name, student in plan.students.items() if name not in trained
                 and (student.data is None
                      or (student.data, plan.training_seeds[0]) in versions)]
        if ready:
            title = "train students" if not trained else f"train {', '.join(ready)}"
            with run.stage(title, f"{', '.join(ready)}, seeds {seeds}: {processes} at once, "
                                  f"one process each, {threads} thread(s) each"):
                run_students(run, ready, data_of, vision)
            trained.update(ready)
        due = [name for name in rounds if plan.rounds[name].student in trained]
        if not due:
            break
        for name in due:
            teacher = plan.rounds[name].student
            with run.stage(f"round {name}", f"{teacher} (each seed's model) as the next "
                                            "teacher: sample, judge, publish a child version"):
                for seed in plan.training_seeds:
                    versions[(name, seed)] = run_round(run, name, seed, data_of(teacher, seed))
            rounds.remove(name)



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
        if plan.eval_teachers:  # while stage 0 still trains: the main process waits anyway
            with run.stage("eval teachers", f"data/teachers/{plan.teachers}.yaml on the "
                                            f"{plan.eval_split} split, through their engines"):
                run_teacher_evals(run)
        with run.stage("stage 0", "pretrain the vision tower on the training pool's digits"):
            vision = finish_vision(run, vision_job)
    finally:
        if vision_job is not None:
            vision_job.stop()  # on an error above; a no-op once it has finished
    train_all(run, dataset, vision)
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

