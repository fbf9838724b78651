"""`distill answers PATH`: how a teacher's or a model's outputs are being read, before a
dataset is published or a score is trusted. An entry point (it reads a generate folder
and an eval result, two stages' outputs), grouping the judge's verdicts by reason with
examples (``distill.core.answers.diagnose``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import click

from distill.core.answers import judge_output
from distill.core.answers.diagnose import format_report, group_by_reason
from distill.core.answers.judge import Verdict
from distill.core.answers.model_tier import ModelTier
from distill.core.errors import InputError
from distill.core.evalsets import load_eval_set
from distill.core.prompts import builtin_answer_format
from distill.core.shards import iter_records, read_json_model
from distill.evaluate.cache import default_cache_dir
from distill.filter.inputs import open_generate_dir
from distill.generate.engines.base import ChatRequest, Completion
from distill.schemas import EvalResult, Rejection, Sample, SamplingParams, Trace, content_hash

Row = tuple[str, Sample, str, Verdict]
# An extraction model's reply is one line, "Answer: X".
EXTRACT_MAX_TOKENS = 64


@click.command("answers")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--examples", default=3, show_default=True, help="Examples per reason.")
@click.option("--eval-set", "eval_set", default=None,
              help="For an eval result: the eval set it scored, if not where it was.")
@click.option("--extract-model", "extract_model", default=None, metavar="ENGINE:MODEL",
              help="Model tier (off by default): ask this extraction model (an engine spec, "
                   "e.g. vllm:Qwen/Qwen2.5-7B-Instruct, openai:NAME, builtin:extract) about "
                   "the outputs the rules found no answer in; its verdicts are counted apart.")
@click.option("--extract-cache", "extract_cache", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the extraction model's replies are kept (default: the eval cache).")
def answers_command(path: Path, examples: int, eval_set: str | None,
                    extract_model: str | None, extract_cache: Path | None) -> None:
    """Group PATH's unparseable and wrong outputs by the judge's reason, with examples.

    PATH is a `distill generate` folder (its traces, and the outputs generate rejected as
    unparseable) or an eval result JSON written by `distill eval`."""
    if path.is_dir():
        rows, title = _generate_rows(path), f"answers of {path}"
    else:
        rows, title = _eval_rows(path, eval_set), f"answers of {path.name}"
    tier = None
    if extract_model:
        tier = _model_tier(extract_model, extract_cache)
        rows = iter(tier.reread(rows))
    report = group_by_reason(rows, examples)
    click.echo(format_report(report, title))
    if tier is not None:
        read: Counter = Counter()
        for (correctness, _), count in report.model_verdicts.items():
            read[correctness] += count
        click.echo(f"\nread by the extraction model {extract_model}: "
                   f"{sum(read.values())} outputs (correct {read['correct']}, wrong "
                   f"{read['wrong']}); {tier.asked} asked now, the rest from its cache")


def _model_tier(spec: str, cache: Path | None) -> ModelTier:
    """The judge's model tier through any engine of the project, found by name."""
    from distill.generate.predictor import resolve_engine

    _, engine_cls, model, options = resolve_engine(spec, {})
    engine = engine_cls(model, options)
    sampling = SamplingParams(temperature=0.0, max_tokens=EXTRACT_MAX_TOKENS)

    def ask(prompts: Sequence[tuple[str, str]]) -> list[str | None]:
        requests = [ChatRequest(id=str(index), system=system, user=user, images=(),
                                sampling=sampling) for index, (system, user) in enumerate(prompts)]
        replies: list[str | None] = [None] * len(requests)
        for done in engine.generate(requests):
            result = done.results[0] if done.results else None
            if isinstance(result, Completion):
                replies[int(done.request.id)] = result.text
        return replies

    model_key = content_hash({"engine": engine_cls.name, "model": model,
                              "options": options.model_dump(), "sampling": sampling.model_dump()})
    return ModelTier(ask, model_key, cache or default_cache_dir() / "answer-extract")


def _generate_rows(root: Path) -> Iterator[Row]:
    generate = open_generate_dir(root)
    rejected: dict[str, list[Rejection]] = {}
    for path in generate.rejects:
        if path.is_file():
            for rejection in iter_records(path, Rejection):
                if rejection.reason == "unparseable" and rejection.sample_id and rejection.raw:
                    rejected.setdefault(rejection.sample_id, []).append(rejection)
    for pair in generate.shards:
        samples = {sample.id: sample for sample in iter_records(pair.sample_path, Sample)}
        for trace in iter_records(pair.trace_path, Trace):
            sample = samples.get(trace.sample_id)
            if sample is None:
                continue
            answer_format = trace.answer_format or builtin_answer_format(trace.prompt_id,
                                                                         trace.prompt_hash)
            yield trace.sample_id, sample, trace.raw_text, judge_output(
                trace.raw_text, sample, answer_format=answer_format,
                finish_reason=trace.finish_reason)
        for sample_id, rejections in list(rejected.items()):
            sample = samples.get(sample_id)
            if sample is None:
                continue
            for rejection in rejections:
                yield sample_id, sample, rejection.raw or "", _rejected_verdict(rejection,
                                                                               sample)
            del rejected[sample_id]


def _rejected_verdict(rejection: Rejection, sample: Sample) -> Verdict:
    """Generate's reason for an output it rejected: the judge's, read from its message
    ("no final answer: <reason> (finish_reason=..)"); the raw text may be clipped."""
    message = rejection.message
    if message.startswith("no final answer: "):
        reason = message[len("no final answer: "):].split(" ", 1)[0]
        return Verdict("unparseable", reason)
    verdict = judge_output(rejection.raw or "", sample)
    return Verdict("unparseable", verdict.reason if verdict.correctness == "unparseable"
                   else "no_answer")


def _eval_rows(path: Path, eval_set: str | None) -> Iterator[Row]:
    result = read_json_model(path, EvalResult)
    try:
        samples = {s.id: s for s in load_eval_set(eval_set or result.eval_set,
                                                  verify=False).samples}
    except InputError as exc:
        raise InputError(f"cannot load the eval set this result scored ({exc.message}); "
                         "name it with --eval-set", file=path, field="eval_set",
                         reason="missing_file") from None
    answer_format = builtin_answer_format(str(result.generation.get("prompt_id") or ""),
                                          str(result.generation.get("prompt_hash") or ""))
    for item in result.items:
        sample = samples.get(item.sample_id)
        if sample is None:
            continue
        verdict = judge_output(item.raw_output, sample, answer_format=answer_format)
        if item.correctness == "unparseable" and verdict.correctness != "unparseable":
            # The only input the item does not keep is its finish reason: it was cut off.
            verdict = Verdict("unparseable", "truncated", verdict.answer, None, verdict.marker)
        yield item.sample_id, sample, item.raw_output, verdict
