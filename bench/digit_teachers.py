"""Measured accuracy of the built-in digit teachers on the val split, per category.

Runs the real pipeline (`distill ingest digits` -> `distill generate`) and judges every
trace against the gold answer: once greedy (temperature 0) and once with the shipped
teacher set (data/teachers/digits.yaml: k=2 at temperature 0.7). Also counts the items
each reader gets wrong that the other gets right: the two have different error profiles.

    python bench/digit_teachers.py           # the full val split (400 items)
    python bench/digit_teachers.py --quick   # 200 items

Last line: greedy item accuracy of both readers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from distill.core.answers import judge  # noqa: E402
from distill.core.paths import DATA_DIR  # noqa: E402
from distill.core.shards import iter_records  # noqa: E402
from distill.generate.runner import GenerateOptions, run_generate  # noqa: E402
from distill.ingest.pipeline import IngestOptions, ingest, open_source  # noqa: E402
from distill.schemas import Sample, Trace  # noqa: E402


def _accuracy(root: Path, samples: dict[str, Sample], teachers: Path, name: str):
    out = root / name
    run_generate(GenerateOptions(root / "ingest", str(teachers), out))
    right: dict[tuple[str, str], list[bool]] = defaultdict(list)  # (teacher, category)
    per_item: dict[tuple[str, str], bool] = {}
    for path in sorted(out.glob("traces/*/part-*.jsonl")):
        for trace in iter_records(path, Trace):
            sample = samples[trace.sample_id]
            ok = judge(trace.final_answer, sample) == "correct"
            right[(trace.teacher_id, sample.category)].append(ok)
            right[(trace.teacher_id, "all")].append(ok)
            if trace.k == 0:
                per_item[(trace.teacher_id, sample.id)] = ok
    return right, per_item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 200 if args.quick else 400
    os.environ["DISTILL_PROGRESS"] = "0"
    root = Path(tempfile.mkdtemp(prefix="bench-teachers-"))
    try:
        rows, total = open_source("digits", None, counts={"val": count}, seed=0)
        ingest(rows, IngestOptions(out=root / "ingest"), total=total)
        samples = {s.id: s for s in iter_records(root / "ingest/samples/val/part-00000.jsonl",
                                                 Sample)}
        shipped = yaml.safe_load((DATA_DIR / "teachers/digits.yaml").read_text())
        greedy = {tid: {**spec, "k": 1, "sampling": {**spec["sampling"], "temperature": 0.0}}
                  for tid, spec in shipped["teachers"].items()}
        (root / "greedy.yaml").write_text(yaml.safe_dump({"teachers": greedy}))
        greedy_right, items = _accuracy(root, samples, root / "greedy.yaml", "greedy")
        sampled_right, _ = _accuracy(root, samples, DATA_DIR / "teachers/digits.yaml",
                                     "sampled")
        categories = sorted({c for _, c in greedy_right} - {"all"}) + ["all"]
        print(f"val split, {count} items (digits seed 0); accuracy = judged correct / traces")
        print(f"{'category':<15}{'knn greedy':>12}{'logreg greedy':>15}"
              f"{'knn T=0.7':>11}{'logreg T=0.7':>14}")
        for category in categories:
            cells = [sum(v) / len(v) for v in (greedy_right[("knn", category)],
                                               greedy_right[("logreg", category)],
                                               sampled_right[("knn", category)],
                                               sampled_right[("logreg", category)])]
            print(f"{category:<15}" + "".join(f"{c:>{w}.3f}" for c, w in
                                              zip(cells, (12, 15, 11, 14), strict=True)))
        only_knn = sum(1 for s in samples if not items[("knn", s)] and items[("logreg", s)])
        only_lr = sum(1 for s in samples if items[("knn", s)] and not items[("logreg", s)])
        both = sum(1 for s in samples if not items[("knn", s)] and not items[("logreg", s)])
        print(f"greedy errors: knn only {only_knn}, logreg only {only_lr}, both {both}")
        knn = sum(greedy_right[("knn", "all")]) / len(greedy_right[("knn", "all")])
        lr = sum(greedy_right[("logreg", "all")]) / len(greedy_right[("logreg", "all")])
        print(f"accuracy knn/logreg: {knn:.3f}/{lr:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
