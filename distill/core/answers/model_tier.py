"""The judge's model tier (off by default): an extraction model reads the outputs the rules
could not read, the way MathVista's and VLMEvalKit's GPT extraction works, but offline
and through any engine of the project.

Why a tier and not a replacement: the rules are exact, free and auditable; a model is
none of these. So the model is asked only about outputs the rules found no answer in
(``RETRIED_REASONS``: not a truncation, an empty output or an avowed hedge, which are
right to stay unparseable), its reply ("Answer: X" or "Answer: NONE", prompts/
answer-extract.yaml) is judged by the same rules as any answer, and every verdict it
gives carries its own marker (``MODEL_MARKER``) so reports count it apart.

Asked once per output: a reply is cached under the hash of (extraction model, prompt,
item as the model sees it, output text) in ``CACHE/<tier key>/part-NNNNN.jsonl``, one
durable shard per run, like the eval stage's generation cache; a rerun asks only about
new outputs. Which engine answers is the caller's choice (``ask``): the core never
imports a stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distill.core.answers.judge import Verdict, judge_answer
from distill.core.prompts import PromptTemplate, load_prompt
from distill.core.shards import ShardWriter, iter_lines, shard_name
from distill.schemas import Sample, content_hash

MODEL_MARKER = "model"
DEFAULT_PROMPT = "answer-extract"
# Unparseable for want of a readable statement: a model may find one the rules missed.
RETRIED_REASONS = frozenset({"no_answer", "empty_answer", "not_a_number", "not_an_option",
                             "no_yes_no", "multiple_answers"})
# The tail of an output shown to the model: the answer is at the end.
RESPONSE_TAIL_CHARS = 6000
_REPLY = re.compile(r"answer\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NONE = {"none", "n/a", "no answer", ""}

# (system, user) prompts in, one reply per prompt out (same order); None where the engine
# gave no reply (a failed request: not cached, asked again next time).
Ask = Callable[[Sequence[tuple[str, str]]], list[str | None]]


@dataclass(frozen=True)
class Pending:
    """An output the rules could not read, waiting for the model."""

    key: str
    sample: Sample
    system: str
    user: str


class ModelTier:
    """Re-reads unparseable verdicts with an extraction model; see the module docstring.

    ``model_key`` names the model and its decoding (what makes its replies what they are);
    with ``cache_dir`` None nothing is stored."""

    def __init__(self, ask: Ask, model_key: str, cache_dir: Path | None = None,
                 prompt: PromptTemplate | None = None) -> None:
        self.ask = ask
        self.prompt = prompt or load_prompt(DEFAULT_PROMPT, kind="extract")
        self.key = content_hash({"model": model_key, "prompt": self.prompt.hash})
        self.folder = None if cache_dir is None else Path(cache_dir) / self.key[:16]
        self.replies: dict[str, str] = self._load()
        self.asked = 0

    def reread(self, rows: Iterable[tuple[str, Sample, str, Verdict]]
               ) -> list[tuple[str, Sample, str, Verdict]]:
        """Every row, its verdict replaced by the model's where the rules found none."""
        rows = list(rows)
        pending = {index: self._pending(sample, raw)
                   for index, (_, sample, raw, verdict) in enumerate(rows)
                   if verdict.correctness == "unparseable" and verdict.reason in RETRIED_REASONS}
        self._fill([p for p in pending.values() if p.key not in self.replies])
        out = []
        for index, (item_id, sample, raw, verdict) in enumerate(rows):
            reply = self.replies.get(pending[index].key) if index in pending else None
            if reply is not None:
                verdict = self.verdict(reply, sample) or verdict
            out.append((item_id, sample, raw, verdict))
        return out

    @staticmethod
    def verdict(reply: str, sample: Sample) -> Verdict | None:
        """The model's reply judged like any answer; None when it found no answer."""
        found = _REPLY.findall(reply)
        answer = found[-1].strip().strip("*_`\"' .") if found else ""
        if answer.lower() in _NONE:
            return None
        judged = judge_answer(answer, sample)
        if judged.correctness == "unparseable":
            return None
        return Verdict(judged.correctness, judged.reason, judged.answer, judged.canonical,
                       MODEL_MARKER)

    def _pending(self, sample: Sample, raw: str) -> Pending:
        system, user = self.prompt.render(sample, response=raw[-RESPONSE_TAIL_CHARS:])
        key = content_hash({"tier": self.key, "system": system, "user": user})
        return Pending(key, sample, system, user)

    def _fill(self, pending: list[Pending]) -> None:
        unique = list({p.key: p for p in pending}.values())
        if not unique:
            return
        replies = self.ask([(p.system, p.user) for p in unique])
        if len(replies) != len(unique):
            raise ValueError(f"the extraction model gave {len(replies)} replies to "
                             f"{len(unique)} prompts")
        self.asked += len(unique)
        answered = [(item.key, reply) for item, reply in zip(unique, replies, strict=True)
                    if reply is not None]
        self.replies.update(answered)
        self._store(answered)

    def _load(self) -> dict[str, str]:
        replies: dict[str, str] = {}
        if self.folder is None or not self.folder.is_dir():
            return replies
        for path in sorted(self.folder.glob("part-*.jsonl")):
            for _, line in iter_lines(path):
                record = json.loads(line)
                replies[record["key"]] = record["reply"]
        return replies

    def _store(self, replies: list[tuple[str, str]]) -> None:
        if self.folder is None or not replies:
            return
        index = len(list(self.folder.glob("part-*.jsonl"))) if self.folder.is_dir() else 0
        writer = ShardWriter(self.folder / shard_name(index))
        try:
            for key, reply in replies:
                writer.write_line(json.dumps({"key": key, "reply": reply}, ensure_ascii=False))
            writer.commit()
        finally:
            writer.close()
