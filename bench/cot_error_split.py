"""Where a digits CoT student goes wrong: reading the digits, or working the sum.

For each eval result (CoT mode, on a digits ingest split), three shares of the items: the
answer is right; the first line lists exactly the true digits (the reading); the answer is
the sum of the digits the student listed (the arithmetic, right or wrong reading). Used in
issue 22 to see which skill the seeds learn at different times (bench/RESULTS.md).

    PYTHONPATH=$PWD python bench/cot_error_split.py --ingest runs/demo/ingest \
        runs/demo/results/cot/seed-*.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.core.digits import digits_of, listed_digits
from distill.core.shards import iter_records, read_json_model
from distill.schemas import EvalResult, Sample


def split_errors(result: EvalResult, samples: dict[str, Sample]) -> dict[str, float]:
    n = len(result.items)
    right = read = worked = 0
    for item in result.items:
        listed = listed_digits(item.raw_output)
        right += item.correctness == "correct"
        read += listed == digits_of(samples[item.sample_id])
        worked += listed is not None and item.extracted == str(sum(listed))
    return {"accuracy": right / n, "read_right": read / n, "sum_of_listed": worked / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest", type=Path, required=True, help="the digits ingest folder")
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    samples = {s.id: s for f in sorted((args.ingest / "samples").glob("*/*.jsonl"))
               for s in iter_records(f, Sample)}
    print("| result | accuracy % | digits read right % | answer = sum of listed digits % |")
    print("|---|---|---|---|")
    for path in args.results:
        shares = split_errors(read_json_model(path, EvalResult), samples)
        print(f"| {path} | {100 * shares['accuracy']:.1f} | {100 * shares['read_right']:.1f} | "
              f"{100 * shares['sum_of_listed']:.1f} |")


if __name__ == "__main__":
    main()
