"""Pydantic records: the only contract between the toolkit's stages (README, "Architecture").

The folder ``schemas/`` is imported only as ``distill.schemas`` (through the link
``distill/schemas``); see ``distill._one_package``.
"""

from distill._one_package import refuse_second_name

refuse_second_name(__name__, "distill.schemas", __file__)

from distill.schemas.base import SCHEMA_VERSION, Record
from distill.schemas.dataset_manifest import DatasetManifest
from distill.schemas.eval_result import EvalItem, EvalResult, HarnessRun, HarnessScore, ModelRef
from distill.schemas.hashing import canonical_json, content_hash, file_sha256, sha256_hex
from distill.schemas.judgement import (
    JudgeIdentity,
    Judgement,
    make_judgement_key,
    same_answer_subject,
)
from distill.schemas.manifest import ShardRef, StageManifest
from distill.schemas.rejection import Rejection
from distill.schemas.run_manifest import RunManifest
from distill.schemas.sample import ImageRef, Sample
from distill.schemas.scored_trace import ScoredTrace
from distill.schemas.trace import SamplingParams, Trace, make_trace_key

# Every record kind a file of ours may hold, by the name used in `distill schemas export`.
RECORD_TYPES: dict[str, type[Record]] = {
    "sample": Sample,
    "trace": Trace,
    "rejection": Rejection,
    "scored_trace": ScoredTrace,
    "judgement": Judgement,
    "stage_manifest": StageManifest,
    "dataset_manifest": DatasetManifest,
    "run_manifest": RunManifest,
    "eval_result": EvalResult,
}

__all__ = [
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "DatasetManifest",
    "EvalItem",
    "EvalResult",
    "HarnessRun",
    "HarnessScore",
    "ImageRef",
    "JudgeIdentity",
    "Judgement",
    "ModelRef",
    "Record",
    "Rejection",
    "RunManifest",
    "Sample",
    "SamplingParams",
    "ScoredTrace",
    "ShardRef",
    "StageManifest",
    "Trace",
    "canonical_json",
    "content_hash",
    "file_sha256",
    "make_judgement_key",
    "make_trace_key",
    "same_answer_subject",
    "sha256_hex",
]
