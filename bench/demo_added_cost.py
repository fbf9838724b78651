"""What issue 31 adds to `make demo`, each step alone, beside a stage of the demo timed in
the same sitting, so the ratio carries over from a busy box to a quiet one.

On a finished demo folder (`distill demo --out runs/demo`), in a scratch folder that links
its ingest, runs and results:

- baseline: the generate stage (the built-in teachers writing the 32,000 training traces),
  which took 30 s in the timed 14:42 `make demo` on a quiet 2-core box;
- teacher evals: the same two teachers, greedy, on the 600 test items, with a cold eval
  cache (the demo runs them in its main process while stage 0 trains in its own);
- the report: compare and demo.md with the teachers (their rows, each student's share of
  the best, the error split, the reference lines) against without them.

    PYTHONPATH=$PWD python bench/demo_added_cost.py --demo runs/demo --scratch /tmp/added
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from distill.core.shards import read_json_model
from distill.demo import (
    DemoRun,
    check_lineage,
    load_plan,
    run_compare,
    run_generate,
    run_teacher_evals,
    write_demo_summary,
)
from distill.evaluate.metrics import _item_weights
from distill.schemas import DatasetManifest

QUIET_GENERATE_S = 30.0  # bench/RESULTS.md: the timed make demo at bb78ca5


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def report(run: DemoRun, dataset: Path) -> None:
    reports, seeds = run_compare(run)
    write_demo_summary(run, dataset, reports, seeds, check_lineage(run))


def main() -> None:
    import torch  # noqa: F401  the demo's process has it by then (stage 0's job machinery)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--plan", default="demo")
    args = parser.parse_args()
    if args.scratch.exists():
        shutil.rmtree(args.scratch)
    args.scratch.mkdir(parents=True)
    for name in ("ingest", "runs", "results", "datasets"):
        (args.scratch / name).symlink_to((args.demo / name).resolve())
    plan = load_plan(args.plan)
    run = DemoRun(out=args.scratch, plan=plan)
    [dataset] = [v for v in (args.demo / "datasets" / "versions").iterdir()
                 if read_json_model(v / "manifest.json", DatasetManifest).parent is None]
    generate_s = timed(lambda: run_generate(run))
    teachers_s = timed(lambda: run_teacher_evals(run))
    without = DemoRun(out=args.scratch, plan=plan.model_copy(update={"eval_teachers": False}))
    report(without, dataset)  # warm-up: the imports, which the demo's process has made
    reports = {}
    for name, variant in (("without", without), ("with", run)):
        _item_weights.cache_clear()  # each pays one draw of the weights, as in the demo
        reports[name] = timed(lambda variant=variant: report(variant, dataset))
    report_without_s, report_with_s = reports["without"], reports["with"]
    scale = QUIET_GENERATE_S / generate_s
    print("| step | seconds here | ratio to the baseline | on the quiet box (scaled) |")
    print("|---|---:|---:|---:|")
    for name, seconds in (("generate stage (baseline)", generate_s),
                          ("teacher evals, cold cache", teachers_s),
                          ("compare + demo.md without teachers", report_without_s),
                          ("compare + demo.md with teachers", report_with_s)):
        print(f"| {name} | {seconds:.1f} | {seconds / generate_s:.3f} | "
              f"{seconds * scale:.1f} |")
    print(f"\nadded by the teachers' rows, shares, error split and lines: "
          f"{report_with_s - report_without_s:.1f} s here, "
          f"{(report_with_s - report_without_s) * scale:.1f} s scaled")


if __name__ == "__main__":
    main()
