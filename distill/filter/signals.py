"""The signal vocabulary: every name a scorer writes and a policy may test.

Names are a stable contract: they are stored on every ScoredTrace (kept or dropped), in
scoring caches and in policies; a signal marked ``always=False`` is absent where it has
no value (``judge_score`` of a trace the judge did not score). A scorer that changes what
a signal means bumps its version (see ``distill.filter.scorers``), which invalidates
cached scores.

``stage`` says when a signal is known:

* ``trace``: from one trace and its sample (cached per input shard);
* ``item``: from all traces of one item (teachers x k samples; same shard, cached);
* ``run``: from the whole run at selection time (length statistics of the input,
  eval sets, duplicates). Cheap to recompute, so they are never cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distill.core.answers import REASONS
from distill.core.formatting import md_table

Kind = Literal["bool", "int", "float", "str"]
Stage = Literal["trace", "item", "run"]

CORRECTNESS_VALUES = ("correct", "wrong", "unparseable", "no_gold")
LABEL_SOURCE_VALUES = ("gold", "consensus", "judge", "none")
JUDGE_STATUS_VALUES = ("scored", "rejected", "not_judged")
CONTAMINATION_VALUES = ("none", "image", "question", "question_near")
DUPLICATE_VALUES = ("none", "exact", "near")


@dataclass(frozen=True)
class Signal:
    name: str
    kind: Kind
    stage: Stage
    scorer: str
    doc: str
    values: tuple[str, ...] | None = None  # the closed set of values of a str signal
    always: bool = True  # False: present only when it has a value (a rule on it then fails)


SIGNALS: dict[str, Signal] = {
    signal.name: signal
    for signal in [
        # correctness
        Signal("correctness", "str", "trace", "correctness",
               "the final answer judged against the gold answer by answer type ('no_gold' "
               "when the item has none: see label_source)", CORRECTNESS_VALUES),
        Signal("answer_canonical", "str", "trace", "correctness",
               "the final answer in canonical spelling ('' if none of the asked type)"),
        Signal("answer_reason", "str", "trace", "correctness",
               "why the judge gave its verdict (distill.core.answers.REASONS): 'correct', "
               "or e.g. 'truncated', 'hedged', 'not_an_option', 'wrong_value'; 'no_gold' "
               "for an answer read on an item without gold",
               (*REASONS, "no_gold")),
        # format
        Signal("has_reasoning", "bool", "trace", "format",
               "the trace has at least 3 words of reasoning before its answer"),
        Signal("reasoning_words", "int", "trace", "format", "words of reasoning"),
        Signal("think_blocks", "int", "trace", "format",
               "number of <think>/<thinking>/<reasoning> blocks opened"),
        Signal("tags_balanced", "bool", "trace", "format",
               "thinking tags are well formed: in order, not nested, all closed (a lone "
               "leading </think> counts as closed: chat templates put <think> in the prompt)"),
        Signal("has_answer_line", "bool", "trace", "format",
               "an explicit 'Answer:' / 'Final answer:' line is present"),
        Signal("truncated", "bool", "trace", "format",
               "generation stopped at the token limit (finish reason 'length')"),
        # repetition
        Signal("repetition_ratio", "float", "trace", "repetition",
               "share of 4-grams of (lower-cased, whitespace-split) words that repeat an "
               "earlier 4-gram (0 = none)"),
        Signal("max_ngram_repeats", "int", "trace", "repetition",
               "occurrences of the most frequent word 6-gram"),
        Signal("has_loop", "bool", "trace", "repetition",
               "a degenerate loop: a 6-gram 4+ times, a line 3+ times in a row, or a "
               "tail that repeats one chunk 4+ times"),
        # refusal
        Signal("refusal", "bool", "trace", "refusal",
               "a refusal / cannot-see phrase of data/refusals.txt occurs"),
        # language / garbage
        Signal("garbage_ratio", "float", "trace", "garbage",
               "share of characters that are control/private-use/replacement characters "
               "or inside 40+ character tokens"),
        Signal("latin_ratio", "float", "trace", "garbage",
               "share of letters in Latin script (1.0 when there are no letters)"),
        # length
        Signal("length_tokens", "int", "trace", "length",
               "completion tokens (counted by the engine; estimated from text if absent)"),
        Signal("length_chars", "int", "trace", "length", "characters of raw text"),
        Signal("length_zscore", "float", "run", "length_outlier",
               "z-score of log(1 + length_tokens) among the run's traces of the same "
               "category (0 when the category has fewer than 2 traces)"),
        # agreement (one item = one sample: all its teachers and k samples); answers are
        # grouped by the answer judge (distill.core.answers.same_answer)
        Signal("majority_answer", "str", "item", "agreement",
               "most common answer among the item's traces, answers judged equal counted "
               "together, in canonical spelling ('' if none)"),
        Signal("majority_fraction", "float", "item", "agreement",
               "share of the item's traces that give the majority answer"),
        Signal("majority_count", "int", "item", "agreement",
               "traces of the item that give the majority answer"),
        Signal("majority_teachers", "int", "item", "agreement",
               "teachers with at least one trace giving the majority answer"),
        Signal("agrees_with_majority", "bool", "item", "agreement",
               "this trace gives the item's majority answer"),
        Signal("agreement_teachers", "float", "item", "agreement",
               "share of the item's teachers whose own majority answer equals this trace's"),
        Signal("teacher_majority_share", "float", "item", "agreement",
               "share of this trace's teacher's samples of the item that give the majority "
               "answer"),
        Signal("n_teachers", "int", "item", "agreement", "teachers that answered the item"),
        Signal("pass_rate_k", "float", "item", "agreement",
               "share of this teacher's k samples of the item that are correct (0 without "
               "gold)"),
        Signal("n_samples_k", "int", "item", "agreement",
               "samples this teacher wrote for the item"),
        Signal("pass_rate_item", "float", "item", "agreement",
               "share of all the item's traces that are correct (0 without gold)"),
        # the item's label: gold, or derived (distill.filter.consensus)
        Signal("label", "str", "item", "agreement",
               "the item's label: its gold answer, or the derived one ('' if none)"),
        Signal("label_source", "str", "item", "agreement",
               "where the label comes from: the item's gold; the teachers' consensus (one "
               "group of equal answers strictly largest); the judge's scores breaking a tie; "
               "none (no answer of the asked type, or an unbroken tie)", LABEL_SOURCE_VALUES),
        Signal("agrees_with_label", "bool", "item", "agreement",
               "this trace's answer is the label (with gold: it is correct)"),
        # judge (distill judge; filter --judgements)
        Signal("judge_score", "float", "trace", "judge",
               "the judge's rubric score of this trace in [0, 1] (absent unless "
               "judge_status is 'scored', so a rule on it fails for unjudged traces)",
               always=False),
        Signal("judge_status", "str", "trace", "judge",
               "scored; rejected (the judge's reply was no valid score, or the call failed: "
               "see judge_reason); not_judged (no judgements given, or none for this trace)",
               JUDGE_STATUS_VALUES),
        Signal("judge_reason", "str", "trace", "judge",
               "why the judge's judgement was rejected ('' otherwise)"),
        # run-level
        Signal("contamination", "str", "run", "decontamination",
               "why the item matches an eval set item: its image, its question text, or a "
               "near-duplicate question ('none' if clean or no eval set given)",
               CONTAMINATION_VALUES),
        Signal("duplicate", "str", "run", "dedup",
               "exact or near duplicate of an earlier trace (in this run or a parent "
               "version), among traces that passed the rules", DUPLICATE_VALUES),
        Signal("duplicate_of", "str", "run", "dedup",
               "trace_key of the trace this one duplicates ('' if none)"),
    ]
}


def signal_table_markdown() -> str:
    """The vocabulary as a Markdown table (README, `distill filter --signals`)."""
    rows = [[f"`{signal.name}`",
             signal.kind if signal.values is None else " / ".join(signal.values),
             signal.stage, signal.doc] for signal in SIGNALS.values()]
    return md_table(["signal", "type", "known at", "meaning"], rows)
