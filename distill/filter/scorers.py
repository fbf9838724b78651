"""Scorers: each turns a trace (and its sample) into named signals.

Every scorer has a name and a version string; the versions go into the scoring cache
key and the dataset manifest, so changing what a scorer computes (or the refusal phrase
list) re-scores on the next run, and nothing else does. The names the scorers write
are the vocabulary of ``distill.filter.signals``.

Per-trace scorers see one ``TraceView``; the agreement scorer
(``distill.filter.consensus``) sees all traces of one item (its teachers and their k
samples), which generate writes into the same shard; judge signals come from a judge
run's judgements (``distill.filter.judgements``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.core.answers import ParsedOutput, read_trace, verdict_of
from distill.core.paths import DATA_DIR
from distill.core.text import read_text
from distill.filter.consensus import AGREEMENT, AGREEMENT_VERSION
from distill.filter.judgements import JUDGE, JUDGE_VERSION
from distill.schemas import Sample, Trace, sha256_hex
from distill.schemas.base import Scalar

Signals = dict[str, Scalar]
DEFAULT_REFUSALS = DATA_DIR / "refusals.txt"

MIN_REASONING_WORDS = 3
LOOP_NGRAM = 6
LOOP_NGRAM_REPEATS = 4
LOOP_LINE_REPEATS = 3
LOOP_TAIL_MIN_CHARS = 40
LOOP_TAIL_MAX_PERIOD = 200
OVERLONG_TOKEN = 40


@dataclass(frozen=True)
class TraceView:
    """What a per-trace scorer sees: the trace, its sample and the raw text as the judge
    reads it (the prompt's answer format first; a trace written before the format was
    recorded gets its built-in prompt's format, when its hash still matches)."""

    trace: Trace
    sample: Sample
    parsed: ParsedOutput

    @classmethod
    def of(cls, trace: Trace, sample: Sample) -> TraceView:
        return cls(trace, sample, read_trace(trace, sample))


@dataclass(frozen=True)
class Scorer:
    name: str
    version: str
    score: Callable[[TraceView], Signals]


# --- correctness -------------------------------------------------------------------------


def score_correctness(view: TraceView) -> Signals:
    """Judge the trace's raw text against the gold, with the judge generate recorded its
    final answer by (so traces generated before a judge change are judged by the new
    rules), and say why. An item without gold gets 'no_gold' and its answer read by the
    same rules (a truncated or hedged output reads as no answer), for agreement to count."""
    if not view.sample.has_gold:
        return _read_without_gold(view)
    verdict = verdict_of(view.parsed, view.sample)
    return {
        "correctness": verdict.correctness,
        "answer_canonical": verdict.canonical or "",
        "answer_reason": verdict.reason,
    }


def _read_without_gold(view: TraceView) -> Signals:
    """The answer as consensus counts it: '' (a non-answer) with the judge's reason when
    the output holds no answer of the asked type (truncated, hedged, not an option...);
    its canonical spelling and the reason 'no_gold' otherwise."""
    parsed = view.parsed
    if parsed.reason != "ok" or parsed.canonical is None:
        reason = "no_answer" if parsed.reason == "ok" else parsed.reason
        return {"correctness": "no_gold", "answer_canonical": "", "answer_reason": reason}
    return {"correctness": "no_gold", "answer_canonical": parsed.canonical,
            "answer_reason": "no_gold"}


# --- format ------------------------------------------------------------------------------

_TAG = re.compile(r"<(/?)(think|thinking|reasoning)\s*>", re.IGNORECASE)


def tag_structure(text: str) -> tuple[int, bool]:
    """(blocks opened, well formed). Well formed: in order, never nested, all closed,
    a closing tag names the tag it closes. A first tag that is a close counts as one
    block whose opening tag was in the prompt (Qwen3 / R1 chat templates do that)."""
    blocks, open_name, well_formed = 0, None, True
    for index, match in enumerate(_TAG.finditer(text)):
        closing, name = match.group(1) == "/", match.group(2).lower()
        if closing:
            if open_name is not None and open_name == name:
                open_name = None
            elif open_name is None and index == 0:
                blocks += 1
            else:
                well_formed = False
        else:
            if open_name is not None:
                well_formed = False
            open_name = name
            blocks += 1
    return blocks, well_formed and open_name is None


def score_format(view: TraceView) -> Signals:
    words = len(view.trace.reasoning.split())
    blocks, balanced = tag_structure(view.trace.raw_text)
    return {
        "has_reasoning": words >= MIN_REASONING_WORDS,
        "reasoning_words": words,
        "think_blocks": blocks,
        "tags_balanced": balanced,
        "has_answer_line": view.parsed.has_answer_line,
        "truncated": view.trace.finish_reason == "length",
    }


# --- repetition --------------------------------------------------------------------------

def score_repetition(view: TraceView) -> Signals:
    text = view.trace.raw_text
    words = text.lower().split()
    grams4 = Counter(zip(words, words[1:], words[2:], words[3:], strict=False))
    total4 = max(0, len(words) - 3)
    ratio = 1.0 - len(grams4) / total4 if total4 else 0.0
    # A 6-gram occurs at most as often as the 4-gram it starts with: count 6-grams only
    # when some 4-gram repeats.
    if len(words) < LOOP_NGRAM:
        max_repeats = 0
    elif max(grams4.values()) <= 1:
        max_repeats = 1
    else:
        grams6 = Counter(zip(*(words[i:] for i in range(LOOP_NGRAM)), strict=False))
        max_repeats = max(grams6.values())
    loop = (max_repeats >= LOOP_NGRAM_REPEATS or _repeated_lines(text) >= LOOP_LINE_REPEATS
            or _periodic_tail(text))
    return {"repetition_ratio": round(ratio, 6), "max_ngram_repeats": max_repeats,
            "has_loop": loop}


def _repeated_lines(text: str) -> int:
    """The longest run of identical non-blank lines."""
    best, run, previous = 0, 0, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        run = run + 1 if line == previous else 1
        previous = line
        best = max(best, run)
    return best


def _periodic_tail(text: str) -> bool:
    """The text ends in one chunk repeated (>= 4 times, >= 40 chars): a decoding loop
    that word n-grams miss ('!!!!!!...', 'abcabcabc...').

    Only periods p where the last character recurs p characters earlier can qualify, so
    those are found with ``rfind`` instead of trying all 200."""
    tail = text.rstrip()[-(LOOP_TAIL_MAX_PERIOD * 4 + LOOP_TAIL_MIN_CHARS):]
    if len(tail) < LOOP_TAIL_MIN_CHARS:
        return False
    end, last = len(tail) - 1, tail[-1]
    position = tail.rfind(last, max(0, end - LOOP_TAIL_MAX_PERIOD), end)
    while position != -1:
        period = end - position
        repeats = max(4, math.ceil(LOOP_TAIL_MIN_CHARS / period))
        span = repeats * period
        if span <= len(tail) and tail[-2 * period : -period] == tail[-period:]:
            chunk = tail[-period:]
            if chunk.strip() and tail[-span:] == chunk * repeats:
                return True
        position = tail.rfind(last, max(0, end - LOOP_TAIL_MAX_PERIOD), position)
    return False


# --- refusal -----------------------------------------------------------------------------


def load_refusal_phrases(path: Path = DEFAULT_REFUSALS) -> list[str]:
    """One phrase a line, '#' comments; normalised like the text they are matched in."""
    lines = read_text(path, what="refusal phrase file").splitlines()
    phrases = [_normalize_for_phrases(line).strip() for line in lines
               if line.strip() and not line.lstrip().startswith("#")]
    return sorted(set(phrases))


_PUNCTUATION_TO_SPACE = str.maketrans({c: " " for c in "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~"})


def _normalize_for_phrases(text: str) -> str:
    """Lower case, curly apostrophes straight, punctuation (but ') as space, one space
    between words, and a leading space so that a phrase match starts at a word."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return " " + " ".join(text.translate(_PUNCTUATION_TO_SPACE).split())


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """One regex for many phrases, as a word trie: 'i (?:cannot (?:see|view)|am ...)'.

    A flat alternation tries every phrase at every position; the trie tries only the
    phrases that share the text's next word, which is several times faster."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for word in phrase.split(" "):
            node = node.setdefault(word, {})
        node[""] = {}

    def build(node: dict) -> str:
        if "" in node:  # a phrase ends here; longer ones add nothing to "does any match"
            return ""
        options = []
        for word, child in sorted(node.items()):
            rest = build(child)
            options.append(re.escape(word) + (" " + rest if rest else ""))
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    # Texts are normalised to start with a space and to separate words by one space, so a
    # leading literal space anchors a match at a word start (and lets the regex engine
    # skip ahead from space to space).
    return re.compile(" " + build(trie) + r"(?!\w)")


def refusal_scorer(phrases: Sequence[str]) -> Scorer:
    """A scorer for this phrase list; its version names the list by content hash."""
    pattern = phrase_pattern(phrases) if phrases else None

    def score(view: TraceView) -> Signals:
        text = _normalize_for_phrases(view.trace.raw_text)
        return {"refusal": pattern is not None and pattern.search(text) is not None}

    digest = sha256_hex("\n".join(phrases).encode())[:12]
    return Scorer("refusal", f"1+{digest}", score)


# --- language / garbage ------------------------------------------------------------------

_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff]")
_LETTER = re.compile(r"[^\W\d_]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def score_garbage(view: TraceView) -> Signals:
    text = view.trace.raw_text
    if not text:
        return {"garbage_ratio": 0.0, "latin_ratio": 1.0}
    bad = len(_BAD_CHARS.findall(text))
    bad += sum(len(token) for token in text.split() if len(token) >= OVERLONG_TOKEN)
    latin_ratio = 1.0  # ASCII letters are all Latin (and no letters counts as 1.0)
    if not text.isascii():
        letters = _LETTER.subn("", text)[1]
        latin_ratio = round(_LATIN.subn("", text)[1] / letters, 6) if letters else 1.0
    return {"garbage_ratio": round(min(1.0, bad / len(text)), 6), "latin_ratio": latin_ratio}


# --- length ------------------------------------------------------------------------------

_TOKENISH = re.compile(r"\w+|[^\w\s]")


def score_length(view: TraceView) -> Signals:
    tokens = view.trace.completion_tokens
    if tokens is None:
        tokens = len(_TOKENISH.findall(view.trace.raw_text))
    return {"length_tokens": tokens, "length_chars": len(view.trace.raw_text)}


# --- the suite ---------------------------------------------------------------------------


class ScorerSuite:
    """All per-trace scorers plus agreement, with their versions."""

    def __init__(self, refusal_phrases: Sequence[str] | None = None) -> None:
        phrases = load_refusal_phrases() if refusal_phrases is None else list(refusal_phrases)
        self.scorers = [
            # 3: the answer judge reads the raw text (last statement wins, answer types,
            # precision, truncation unparseable) and says why ("answer_reason"); an item
            # without gold is 'no_gold' (2 on either side before the merge meant different
            # things, so both re-score).
            Scorer("correctness", "3", score_correctness),
            Scorer("format", "2", score_format),  # has_answer_line from the new reading
            Scorer("repetition", "1", score_repetition),
            refusal_scorer(phrases),
            Scorer("garbage", "1", score_garbage),
            Scorer("length", "1", score_length),
        ]

    @property
    def versions(self) -> dict[str, str]:
        versions = {scorer.name: scorer.version for scorer in self.scorers}
        versions[AGREEMENT] = AGREEMENT_VERSION
        versions[JUDGE] = JUDGE_VERSION
        return versions

    def score_trace(self, trace: Trace, sample: Sample) -> Signals:
        view = TraceView.of(trace, sample)
        signals: Signals = {}
        for scorer in self.scorers:
            signals.update(scorer.score(view))
        return signals
