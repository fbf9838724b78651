"""Parse cost per output, before and after a change of the judge, side by side in one run.

    PYTHONPATH=$PWD python bench/parse_cost.py --before 63b0630 [--rounds 3] [--n 20000]

Each tree (``--before``: a commit of this repository, exported with ``git archive`` to a
temporary folder; after: this working tree) runs in its own subprocess, alternating, so
load on the box hits both alike; the figure is CPU time per output (``time.process_time``),
best of the rounds. Three kinds of output:

* the demo's traces: the built-in digit teachers' text (``rationale('sum', digits)``, the
  function the demo's teachers write with) read by generate (``read_output`` with the cot
  prompt's ``answer_line`` format) and judged (``judge_output``), every trace a new output
  (the reading cache never hits: digits and golds vary, outputs are distinct);
* the real outputs of the tuned real split (``real_tuned.jsonl`` of the corpus
  bench/real_outputs.py rebuilds; both trees read the same file), judged with no declared
  format (the general reading);
* the math-verify tier: how often the demo's traces reach it (counted, not assumed) and
  what one call costs, first call (sympy's import) apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testing.real_corpus import HOW_TO_BUILD, TUNED, corpus_dir  # noqa: E402

WORKER = r'''
import json, random, sys, time
root = sys.argv[1]
sys.path.insert(0, root)
n = int(sys.argv[2])
real_path = sys.argv[3]
from distill.core.answers import judge_output, read_output
from distill.schemas import ImageRef, Sample
import distill.core.answers.numbers as numbers
from distill.generate.engines.builtin import rationale

image = ImageRef(path="a.png", sha256="0" * 64)
rng = random.Random(0)
demo = []
for index in range(n):
    digits = [rng.randrange(10) for _ in range(rng.randint(2, 4))]
    text = rationale("sum", digits)
    gold = sum(digits) if rng.random() < 0.9 else sum(digits) + 1
    sample = Sample(id=f"s{index}", image=image, question="What is the sum of the digits?",
                    answer=str(gold), answer_type="number", category="sum", source="digits")
    demo.append((text, sample))
calls = {"tier": 0}
if hasattr(numbers, "expression_value"):
    original = numbers.expression_value
    def counting(statement):
        calls["tier"] += 1
        return original(statement)
    numbers.expression_value = counting

def timed(fn):
    start = time.process_time()
    fn()
    return time.process_time() - start

read_s = timed(lambda: [read_output(t, s, answer_format="answer_line") for t, s in demo])
judge_s = timed(lambda: [judge_output(t, s, answer_format="answer_line") for t, s in demo])
tier_on_demo = calls["tier"]
if hasattr(numbers, "expression_value"):
    # the tier's one-time costs (sympy's import, the LaTeX parser's first use) outside the
    # timed real pass: they are paid once a process, reported apart below
    original("\\frac{1}{2} \\log{2\\pi}")
real = [json.loads(line) for line in open(real_path, encoding="utf-8")]
def real_sample(c):
    meta = {k: c[k] for k in ("precision", "relative_tolerance") if k in c}
    return Sample(id="r", image=image, question=c["question"] or "?", answer=c["gold"],
                  answer_type=c["answer_type"], choices=c.get("choices"), category="c",
                  source=c["benchmark"], meta=meta)
real_cases = [(c["output"], real_sample(c)) for c in real]
real_s = timed(lambda: [judge_output(t, s) for t, s in real_cases])
print(json.dumps({"demo_read_us": 1e6 * read_s / n, "demo_judge_us": 1e6 * judge_s / n,
                  "real_judge_us": 1e6 * real_s / len(real_cases), "n": n,
                  "tier_calls_on_demo": tier_on_demo, "tier_calls_on_real": calls["tier"]}))
'''

TIER = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from distill.core.answers.numbers import expression_value
start = time.process_time(); first = expression_value("\\frac{1}{2} \\log{2\\pi}")
first_s = time.process_time() - start
start = time.process_time()
for _ in range(50):
    expression_value("\\frac{1}{2} \\log{2\\pi}")
print(first_s, (time.process_time() - start) / 50, first)
'''


def export(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(root: Path, n: int, real: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, str(root), str(n), str(real)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="63b0630")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    corpus = corpus_dir()
    if corpus is None:
        sys.exit(f"the real-output corpus is not built: {HOW_TO_BUILD}")
    real = corpus / TUNED  # both trees judge the same outputs
    with tempfile.TemporaryDirectory() as tmp:
        before = export(args.before, Path(tmp))
        results: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            results["before"].append(run(before, args.n, real))
            results["after"].append(run(ROOT, args.n, real))
    print(f"CPU time per output, best of {args.rounds} alternating rounds, {args.n} demo "
          f"traces (before = {args.before}, after = this tree)")
    for key, label in (("demo_read_us", "demo trace, generate's reading"),
                       ("demo_judge_us", "demo trace, reading + verdict"),
                       ("real_judge_us", "real output (487), general reading + verdict")):
        b = min(r[key] for r in results["before"])
        a = min(r[key] for r in results["after"])
        print(f"{label:<45} before {b:8.1f} us   after {a:8.1f} us   ratio {a / b:5.2f}")
    print("math-verify tier calls on the demo traces:",
          max(r["tier_calls_on_demo"] for r in results["after"]), "of", args.n,
          "; on the real outputs:", max(r["tier_calls_on_real"] for r in results["after"]),
          "of 487 (sympy's import done before the timed pass)")
    tier = subprocess.run([sys.executable, "-c", TIER, str(ROOT)], check=True,
                          capture_output=True, text=True).stdout.split()
    print(f"math-verify tier: first call {float(tier[0]) * 1e3:.0f} ms (imports sympy), then "
          f"{float(tier[1]) * 1e3:.1f} ms a call")


if __name__ == "__main__":
    main()
