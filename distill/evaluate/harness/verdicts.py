"""Each harness's own per-item verdict, read where it keeps one, recomputed the way its own
scorer does where it keeps only the pieces. Compare then shows where a harness and our judge
disagree item by item, which is the point of importing a harness run at all.

Where each benchmark's verdict lives (the importers' tests build these layouts):

lmms-eval (EvolvingLMMs-Lab/lmms-eval 0.7.3 wheel, ``lmms_eval/tasks/*/utils.py``): a
task's ``process_results`` returns its per-item metrics, logged in the samples file:

* number metrics, the verdict itself: ScienceQA and AI2D ``exact_match``, ChartQA
  ``relaxed_overall``, MathVerse ``gpt_eval_score`` (0/1), HallusionBench's metrics.
* MMStar: ``average`` = ``{"question_id", "l2_category", "score"}`` -> ``score``.
* MathVista (0.4 and later): ``llm_as_judge_eval`` = ``{..., "true_false"}`` (the same dict as
  ``submission``); before 0.4 the metric was ``gpt_eval_score`` with ``true_false`` inside.
* MMMU: ``mmmu_acc`` = ``{"id", "answer", "question_type", "parsed_pred"}``: no verdict;
  its aggregate (``evaluate_mmmu``) decides per item: an exact letter for multiple choice,
  ``eval_open`` (a normalised gold in a candidate) for open questions. Recomputed here.

VLMEvalKit (open-compass/VLMEvalKit, ``vlmeval/dataset/``): multiple choice ``hit`` and
yes/no ``score`` in the judged files (see vlmevalkit.py). MathVista
(``vlmeval/dataset/utils/mathvista.py``) keeps the judge's extraction ``res`` in
``{stem}_{judge}.xlsx`` and decides in ``MathVista_acc`` through ``post_check``: the option
letter ``can_infer`` finds in ``res`` against ``answer_option``; ``int``/``float`` equality
for integer and float answers; and for text answers a comparison of ``str(None)`` with the
answer, so a free-text MathVista item is never a hit there (reproduced, documented).
"""

from __future__ import annotations

import ast
import re
import string
from typing import Any

from distill.evaluate.harness.rows import as_score

# lmms-eval dict metrics that carry the verdict under one of these keys, in this order.
VERDICT_KEYS = ("score", "true_false", "gpt_eval_score")
LETTERS = string.ascii_uppercase


def lmms_dict_verdict(details: dict[str, Any]) -> float | None:
    """The verdict inside one lmms-eval dict metric (MMStar, MathVista, MMMU), or None."""
    for key in VERDICT_KEYS:
        if key in details:
            return as_score(details[key])
    if "parsed_pred" in details and "answer" in details:
        return _mmmu_verdict(details)
    return None


# -- MMMU (lmms_eval/tasks/mmmu/utils.py: evaluate_mmmu, eval_multi_choice, eval_open) ------

def _mmmu_verdict(details: dict[str, Any]) -> float | None:
    gold = details["answer"]
    if isinstance(gold, str) and gold.startswith("["):
        gold = _literal_list(gold) or gold
    preds = details["parsed_pred"]
    if not isinstance(preds, list):
        return None
    multiple_choice = details.get("question_type") == "multiple-choice"
    for pred in preds:
        hit = _mmmu_choice_hit(gold, pred) if multiple_choice else _mmmu_open_hit(gold, pred)
        if hit:
            return 1.0
    return 0.0


def _mmmu_choice_hit(gold: Any, pred: Any) -> bool:
    return pred in gold if isinstance(gold, list) else pred == gold


def _mmmu_normalize(value: Any) -> list[Any]:
    """MMMU's normalize_str: a number -> [round(float, 2)]; a one-letter string padded."""
    text = str(value).strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [" " + text, text + " "] if len(text) == 1 else [text]


def _mmmu_open_hit(gold: Any, candidates: Any) -> bool:
    golds = [n for g in (gold if isinstance(gold, list) else [gold]) for n in _mmmu_normalize(g)]
    for pred in candidates if isinstance(candidates, list) else [candidates]:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


# -- VLMEvalKit MathVista (vlmeval/dataset/utils/mathvista.py: post_check, can_infer) -------

def is_mathvista_judged(record: dict[str, Any]) -> bool:
    """A row of VLMEvalKit's MathVista judged file: the judge's ``res`` beside the item."""
    return "res" in record and "question_type" in record and "answer" in record


def mathvista_post_check(record: dict[str, Any]) -> float:
    """1.0 when VLMEvalKit's MathVista_acc counts the row a hit, else 0.0."""
    response = "" if record.get("res") is None else str(record["res"])
    kind = record.get("question_type")
    try:
        if kind == "multi_choice":
            choices = _choices(record.get("choices"))
            found = can_infer(response, dict(zip(LETTERS, choices, strict=False)))
            return float(found is not False and found == record.get("answer_option"))
        answer_type = record.get("answer_type")
        if answer_type == "integer":
            return float(int(response) == int(record["answer"]))
        if answer_type == "float":
            return float(float(response) == float(record["answer"]))
    except (ValueError, TypeError):
        return 0.0
    return float(str(None) == str(record.get("answer")))  # its text branch compares str(None)


def _choices(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(v) for v in _literal_list(str(value)) or []]


def _literal_list(text: str, limit: int = 100_000) -> list | None:
    """A Python list literal as the harnesses store it (``"['1.5', '1.50']"``), or None:
    never code, never a crash on a hostile cell (too long, too deep, not a list)."""
    if len(text) > limit:
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return None
    return list(parsed) if isinstance(parsed, list | tuple) else None


_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")


def can_infer_option(answer: str, choices: dict[str, str]) -> str | bool:
    """The option letter standing alone among the last words of ``answer``."""
    if "Failed to obtain answer via API" in answer:
        return False
    if any(refusal in answer for refusal in _REFUSALS):
        return "Z"
    words = re.sub(r"[.()\[\],:;!*#{}]", " ", answer).split()
    present = [letter for letter in choices if letter in words]
    if len(present) == 1:
        letter = present[0]
        return letter if words.index(letter) > len(words) - 5 else False
    if not present and ("Z" in words) != ("" in words):
        return "Z"
    return False


def can_infer_text(answer: str, choices: dict[str, str]) -> str | bool:
    """The one option whose text occurs in a short ``answer``."""
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return False
    found = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else False


def can_infer(answer: str, choices: dict[str, str]) -> str | bool:
    return can_infer_option(str(answer), choices) or can_infer_text(str(answer), choices)
