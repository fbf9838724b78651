"""Reading a judge run (``distill judge``) for the filter: its judgements become signals.

A judge folder mirrors the generate folder it judged: ``judgements/<split>/part-N.jsonl``
(Judgement records) and ``rejects/<split>/part-N.jsonl`` (what the judge could not
score, with the reason) answer ``traces/<split>/part-N.jsonl``. Its manifest names the
traces folder it read and the judge of each kind of judgement (engine, model, prompt,
sampling), so the filter names the judgement every trace should have and tells a scored
trace from a rejected and a not (yet) judged one.

The filter only reads these files: scoring with them, and any policy applied later, never
asks a judge anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from distill.core.errors import InputError
from distill.core.shards import iter_records
from distill.filter.consensus import JudgedSame
from distill.filter.inputs import read_stage_manifest
from distill.schemas import (
    JudgeIdentity,
    Judgement,
    Rejection,
    ShardRef,
    StageManifest,
    file_sha256,
    make_judgement_key,
    same_answer_subject,
)
from distill.schemas.base import Scalar

JUDGE = "judge"
JUDGE_VERSION = "1"
JUDGE_STATUS_VALUES = ("scored", "rejected", "not_judged")


@dataclass(frozen=True)
class JudgeShard:
    """One trace shard's judgement files and the judges that wrote them; plain data, so
    it travels with a scoring task (to Ray too) and goes into the shard's cache key."""

    judgements: str | None
    judgements_sha256: str
    rejects: str | None
    rejects_sha256: str
    rubric: dict | None  # JudgeIdentity as JSON
    same_answer: dict | None

    def cache_identity(self) -> dict:
        return {"judgements": self.judgements_sha256, "rejects": self.rejects_sha256,
                "rubric": self.rubric, "same_answer": self.same_answer}


@dataclass(frozen=True)
class JudgeInput:
    root: Path
    rubric: JudgeIdentity | None
    same_answer: JudgeIdentity | None
    shards: dict[str, JudgeShard]  # by trace shard name (traces/<split>/<file>)

    def for_trace_shard(self, name: str) -> JudgeShard:
        """The judge files of a trace shard (none if the judge run did not reach it)."""
        return self.shards.get(name) or JudgeShard(
            None, "", None, "", self._identity(self.rubric), self._identity(self.same_answer))

    @staticmethod
    def _identity(identity: JudgeIdentity | None) -> dict | None:
        return None if identity is None else identity.model_dump(mode="json")


def open_judge_dir(root: Path | str, traces_root: Path) -> JudgeInput:
    """A finished judge folder that judged ``traces_root``, every file hash-checked."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    manifest = read_stage_manifest(root, "judge", "--judgements")
    judged = Path(manifest.input_dir or "")
    if not judged.is_absolute():
        judged = root / judged
    if judged.resolve() != traces_root.resolve():
        raise InputError(f"these judgements are of {judged.resolve()}, not of --traces "
                         f"{traces_root.resolve()}", file=manifest_path, field="input_dir",
                         reason="wrong_input")
    rubric, same = _identities(manifest, manifest_path)
    rejects = {_trace_name(ref, "rejects"): _checked(root, ref) for ref in manifest.rejects}
    shards: dict[str, JudgeShard] = {}
    for ref in manifest.shards:
        name = _trace_name(ref, "judgements")
        reject = rejects.get(name)
        shards[name] = JudgeShard(
            str(_checked(root, ref)[0]), ref.sha256,
            str(reject[0]) if reject else None, reject[1].sha256 if reject else "",
            JudgeInput._identity(rubric), JudgeInput._identity(same))
    return JudgeInput(root, rubric, same, shards)


def _identities(manifest: StageManifest, path: Path
                ) -> tuple[JudgeIdentity | None, JudgeIdentity | None]:
    judges = manifest.config.get("judges")
    if not isinstance(judges, dict):
        raise InputError("the judge manifest names no judges", file=path,
                         field="config.judges", reason="schema_error")
    out = []
    for kind in ("rubric", "same_answer"):
        value = judges.get(kind)
        try:
            out.append(None if value is None else JudgeIdentity.model_validate(value))
        except ValidationError as exc:
            raise InputError.from_validation(exc, file=path, line=None) from None
    return out[0], out[1]


def _trace_name(ref: ShardRef, folder: str) -> str:
    if not ref.in_folder(folder):
        raise InputError(f"judge shard {ref.name!r} is not {folder}/<split>/<file>",
                         field="shards", reason="schema_error")
    return ref.beside("traces")


def _checked(root: Path, ref: ShardRef) -> tuple[Path, ShardRef]:
    path = root / ref.name
    if not path.is_file():
        raise InputError("judge shard listed in the manifest is missing", file=path,
                         reason="missing_file")
    if file_sha256(path) != ref.sha256:
        raise InputError("judge shard changed since `distill judge` wrote it (sha256 differs "
                         "from its manifest)", file=path, reason="input_changed")
    return path, ref


class JudgeView:
    """What a judge run said about one shard's traces and answer pairs."""

    def __init__(self, shard: JudgeShard | None) -> None:
        self.rubric = JudgeIdentity.model_validate(shard.rubric) \
            if shard and shard.rubric else None
        self.same_answer = JudgeIdentity.model_validate(shard.same_answer) \
            if shard and shard.same_answer else None
        self.judgements: dict[str, Judgement] = {}
        self.rejected: dict[str, str] = {}
        if shard and shard.judgements:
            self.judgements = {j.judgement_key: j
                               for j in iter_records(shard.judgements, Judgement)}
        if shard and shard.rejects:
            self.rejected = {r.key: r.reason for r in iter_records(shard.rejects, Rejection)}

    @property
    def active(self) -> bool:
        return self.rubric is not None or self.same_answer is not None

    def score(self, trace_key: str) -> float | None:
        judgement = self._rubric(trace_key)
        return judgement.score if judgement is not None else None

    def _rubric(self, trace_key: str) -> Judgement | None:
        if self.rubric is None:
            return None
        return self.judgements.get(self._key("rubric", trace_key, self.rubric))

    def trace_signals(self, trace_key: str) -> dict[str, Scalar]:
        """judge_status (and judge_score when scored, judge_reason when rejected)."""
        if self.rubric is None:
            return {"judge_status": "not_judged", "judge_reason": ""}
        key = self._key("rubric", trace_key, self.rubric)
        judgement = self.judgements.get(key)
        if judgement is not None and judgement.score is not None:
            return {"judge_status": "scored", "judge_score": round(judgement.score, 6),
                    "judge_reason": ""}
        if key in self.rejected:
            return {"judge_status": "rejected", "judge_reason": self.rejected[key]}
        return {"judge_status": "not_judged", "judge_reason": ""}

    def judged_same(self, sample_hash: str) -> JudgedSame | None:
        """For one item: did the judge call two of its (canonical) answers the same?"""
        if self.same_answer is None:
            return None
        judge = self.same_answer

        def same(a: str, b: str) -> bool:
            key = self._key("same_answer", same_answer_subject(sample_hash, a, b), judge)
            judgement = self.judgements.get(key)
            return bool(judgement is not None and judgement.same)

        return same

    @staticmethod
    def _key(kind: str, subject: str, judge: JudgeIdentity) -> str:
        return make_judgement_key(kind=kind, subject=subject, judge=judge)  # type: ignore[arg-type]
