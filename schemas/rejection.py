"""Rejection: the ledger entry for anything that failed, so nothing is silently dropped."""

from __future__ import annotations

from typing import Literal

from distill.schemas.base import NonEmptyStr, Record

Stage = Literal["ingest", "generate", "judge", "filter", "train", "eval"]

MAX_RAW_CHARS = 4000


class Rejection(Record):
    """What failed, where, and why.

    ``key`` identifies the unit of work (a trace key in generate, a row reference in
    ingest) so a restart can tell finished failures from work still to do; ``permanent``
    is False for failures worth retrying on the next run (a server that was down).
    """

    stage: Stage
    key: NonEmptyStr
    reason: NonEmptyStr
    message: NonEmptyStr
    sample_id: str | None = None
    teacher_id: str | None = None
    location: str | None = None
    field: str | None = None
    raw: str | None = None
    permanent: bool = True

    @classmethod
    def clip(cls, text: str | None) -> str | None:
        """Raw payloads are kept for inspection, but bounded."""
        if text is None or len(text) <= MAX_RAW_CHARS:
            return text
        return text[:MAX_RAW_CHARS] + f"... [{len(text) - MAX_RAW_CHARS} more chars]"
