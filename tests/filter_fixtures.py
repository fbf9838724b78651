"""Real inputs for filter tests: digits Samples from ingest, and traces written by scripted
teachers that read the real digit labels (hand-written reasoning in several styles, and
the faults filter must catch), in the exact layout generate writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from distill.core.digits import digits_of
from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import Sample, Trace
from testing.filter_data import make_trace, write_generate_dir


def ingest_digits(out: Path, counts: dict[str, int], shard_size: int = 10,
                  seed: int = 0) -> Path:
    config = DigitsConfig(seed=seed, counts=counts)
    ingest(iter_digits(config), IngestOptions(out=out, shard_size=shard_size))
    return out


def reasoning(sample: Sample, style: int = 0) -> str:
    """Correct step-by-step reasoning for a digits item, in one of three styles."""
    digits = digits_of(sample)
    listed = ", ".join(str(d) for d in digits[:-1]) + f" and {digits[-1]}"
    opener = ["The image shows the digits", "I can see these digits in the grid:",
              "Reading each cell of the 2x2 grid, the digits are"][style % 3]
    steps = [f"{opener} {listed}."]
    if sample.category in ("sum", "sum_is_even"):
        total = digits[0]
        for d in digits[1:]:
            steps.append(f"{total} + {d} = {total + d}.")
            total += d
        if sample.category == "sum_is_even":
            steps.append(f"{total} is {'even' if total % 2 == 0 else 'odd'}.")
    elif sample.category == "max_minus_min":
        steps.append(f"The largest is {max(digits)} and the smallest is {min(digits)}.")
        steps.append(f"{max(digits)} - {min(digits)} = {max(digits) - min(digits)}.")
    else:
        even = [d for d in digits if d % 2 == 0]
        steps.append(f"The even ones are {', '.join(map(str, even)) or 'none'}, "
                     f"so {len(even)} digits are even.")
    return " ".join(steps)


def good_text(sample: Sample, style: int = 0) -> str:
    return f"<think>\n{reasoning(sample, style)}\n</think>\nAnswer: {sample.answer}"


def wrong_answer(sample: Sample) -> str:
    if sample.answer_type == "yes_no":
        return "no" if sample.answer == "yes" else "yes"
    return str(int(sample.answer) + 1)


def scripted_teachers(teachers: Iterable[str] = ("alpha", "beta"), k: int = 2
                      ) -> Callable[[Sample], list[Trace]]:
    """Each teacher writes k correct traces per sample, in its own style (k samples of one
    teacher differ in their opening words only)."""
    teachers = list(teachers)

    def traces_for(sample: Sample) -> list[Trace]:
        out = []
        for t_index, teacher in enumerate(teachers):
            for sample_k in range(k):
                out.append(make_trace(sample, teacher, sample_k,
                                      good_text(sample, t_index + sample_k)))
        return out

    return traces_for


def build_generate_dir(tmp: Path, counts: dict[str, int], traces_for: Callable,
                       shard_size: int = 10, seed: int = 0) -> tuple[Path, Path]:
    """(ingest folder, generate folder) for these digits counts and teachers."""
    ingest_dir = ingest_digits(tmp / "ingest", counts, shard_size=shard_size, seed=seed)
    gen_dir = write_generate_dir(tmp / "gen", ingest_dir, traces_for)
    return ingest_dir, gen_dir


def sample_index(sample: Sample) -> int:
    return int(sample.id.rsplit("-", 1)[1])


def faulty_teachers() -> Callable[[Sample], list[Trace]]:
    """Two teachers, k=2, with the faults filter must catch, chosen by item index:

    * alpha k=0: correct, with an 'Answer:' line; alpha k=1: correct, another wording;
    * beta k=0: correct but ends 'so the answer is X' (no answer line);
    * beta k=1 by index % 6: 0 wrong answer, 1 truncated, 2 loop, 3 refusal, 4 tag soup,
      5 correct with an answer line.
    """

    def traces_for(sample: Sample) -> list[Trace]:
        index = sample_index(sample)
        out = [make_trace(sample, "alpha", 0, good_text(sample, 0), completion_tokens=60),
               make_trace(sample, "alpha", 1, good_text(sample, 1), completion_tokens=62),
               make_trace(sample, "beta", 0, f"{reasoning(sample, 2)} So the answer is "
                          f"{sample.answer}.", completion_tokens=55)]
        fault = index % 6
        body = reasoning(sample, 2)
        if fault == 0:
            text, extra = f"<think>\n{body}\n</think>\nAnswer: {wrong_answer(sample)}", {}
        elif fault == 1:
            text = good_text(sample, 2)[:40]
            extra = {"finish_reason": "length", "final_answer": sample.answer}
        elif fault == 2:
            text = (f"<think>\n{body} " + " ".join(["Let me count the digits again."] * 10)
                    + f"\n</think>\nAnswer: {sample.answer}")
            extra = {}
        elif fault == 3:
            text, extra = f"I'm sorry, but I cannot see the image.\nAnswer: {sample.answer}", {}
        elif fault == 4:
            text, extra = f"<think><think>{body}</thinking>\nAnswer: {sample.answer}", {}
        else:
            text = f"{body}\nFinal answer: {sample.answer}"
            extra = {}
        out.append(make_trace(sample, "beta", 1, text, completion_tokens=58, **extra))
        return out

    return traces_for
