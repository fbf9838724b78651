"""The answer judge: reading final answers out of model text and judging them.

One judge for every stage: generate splits a teacher's text into reasoning and final
answer with it, every filter scorer and eval judge with it, and consensus compares
teachers' answers with it. Every verdict is ``correct``, ``wrong`` or ``unparseable``,
with a reason (``REASONS``): a model that gave no answer of the asked type is a different
failure from a wrong answer, and a truncated output is unparseable, not wrong.

The rules, in brief (each module's docstring has the detail):

* ``delimiters``: one table of the reasoning and answer delimiters and special tokens of
  the model families users run (Kimi-VL's ``◁think▷``, GLM-4.1V's boxes, gpt-oss's
  harmony channels, Magistral's ``[THINK]``, end-of-turn tokens), each citing its source;
  every output is put in one spelling before it is read.
* ``extract``: structure first -- the last final-answer statement of the final segment
  wins, whatever its marker (``Answer:``, "the answer is", ``\\boxed{}``, ``<answer>``
  tags, a "Final Answer" heading or bold line, a concluding sentence, and failing all, the
  reply's last sentence or line when it reads as the asked type); reasoning inside
  ``<think>`` never counts when an answer follows it; a tentative "57?" is no statement;
  a prompt's ``answer_format`` is tried first.
* ``phrases``: the English and Chinese words answers are stated with (答案是…, 故选…,
  最终答案…, 结论：…, 是的 / 不是, doubt words).
* ``languages``: every other language's answer labels and sentences, few-shot headers,
  yes/no words, option letters and decimal separators, each entry citing the table it
  came from (simple-evals' MMMLU and MGSM, lm-evaluation-harness task configs, CLDR); a
  base model's run-on into the next few-shot exemplar is cut at its header.
* ``model_tier``: optional, off by default -- an extraction model, through any engine,
  rereads what the rules could not; its verdicts are marked ``model``.
* ``numbers``: units, thousands separators by locale (the output's own evidence, then
  ``Sample.meta['language']``; '1 000', '6,67', '16,\\!386'; a true ambiguity is no
  answer), signs, fractions, percentages, LaTeX (``\\frac``, ``\\cfrac``, ``\\sqrt``,
  ``\\text``, ``^\\circ``), scientific notation, and through math-verify, where installed,
  closed forms it does not evaluate (``\\log``, trig); hedges ('3 or 4') are no answer; an
  item's precision (MathVista) or relative tolerance (ChartQA's relaxed accuracy) from
  ``Sample.meta``.
* ``options``: letters in the common phrasings or the option's text; yes/no in a
  closing sentence.
* ``text``: the stated normalisation of free text (``normalize_text``).

The API for comparing answers without gold (consensus labels): ``AnswerSpec.of(sample)``,
``canonical_answer(answer, spec)`` and ``same_answer(a, b, spec)``.
"""

from distill.core.answers.extract import ParsedOutput, parse_output
from distill.core.answers.judge import (
    REASONS,
    UNPARSEABLE_REASONS,
    WRONG_REASONS,
    Correctness,
    Verdict,
    canonical_answer,
    judge,
    judge_answer,
    judge_output,
    read_output,
    read_trace,
    same_answer,
    verdict_of,
)
from distill.core.answers.numbers import Number, numbers_match, parse_number, read_number
from distill.core.answers.options import NoOption, read_choice, read_yes_no
from distill.core.answers.text import clean_answer, normalize_text
from distill.core.answers.values import PRECISION_KEY, TOLERANCE_KEY, AnswerSpec, read_value


def choice_letter(predicted: str, choices: list[str]) -> str | None:
    """The option a model picked (a letter), or None."""
    letter = read_choice(predicted, choices)
    return None if isinstance(letter, NoOption) else letter


def yes_no(predicted: str) -> str | None:
    """'yes' / 'no', or None."""
    answer = read_yes_no(predicted)
    return None if isinstance(answer, NoOption) else answer


__all__ = [
    "PRECISION_KEY", "REASONS", "TOLERANCE_KEY", "UNPARSEABLE_REASONS", "WRONG_REASONS",
    "AnswerSpec", "Correctness", "Number", "ParsedOutput", "Verdict", "canonical_answer",
    "choice_letter", "clean_answer", "judge", "judge_answer", "judge_output",
    "normalize_text", "numbers_match", "parse_number", "parse_output", "read_number",
    "read_output", "read_trace", "read_value", "same_answer", "verdict_of", "yes_no",
]
