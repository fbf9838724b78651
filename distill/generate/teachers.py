"""Teacher sets: which teachers answer which categories, with which prompt and k.

A teacher set is a YAML file (``data/teachers/digits.yaml`` ships)::

    teachers:
      knn:                       # teacher id: goes into every trace and its key
        engine: builtin          # builtin | openai | hf | vllm | package.module:Class
        model: knn               # model path / served name / builtin reader
        prompt: cot              # a prompts/ name or a file path (default: cot)
        k: 2                     # samples per item
        sampling: {temperature: 0.7, top_p: 1.0, max_tokens: 256, seed: 0}
        batch_size: 256          # optional: a batch engine's batch (hf, builtin); vllm and
                                 # openai stream instead (their options' ``window``)
        max_image_pixels: 1003520  # optional: images scaled down to this budget first
        options: {}              # engine-specific (validated by the engine's Options)
    routing:
      default: [knn, logreg]     # teachers for categories not listed below
      max_minus_min: [logreg]

A trained student of ours can be a teacher (the next round's): ``engine: hf`` (the
student's own loader) or ``vllm`` (the package's plugin serves it) with ``model:`` its run
or checkpoint folder. The teacher then names the checkpoint (``model`` becomes the
checkpoint folder, and its fingerprint and run manifest are part of the teacher: a student
retrained into the same folder is another teacher, so its traces never mix with the old
ones'), asks with the student's own prompt (the one saved with it for CoT, unless
``prompt:`` names the other one it was trained with), and ``distill lineage`` follows its
traces back through the student's run and data. An ``openai`` teacher's model is the name a
server gives it, never taken for a local folder (the server may serve anything under it).

Every teacher is validated when the file is loaded (unknown keys, unknown engines, bad
options, unknown prompts, routes to undefined teachers), with the file and field named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from distill.core.config_files import (
    ConfigFile,
    YamlDocument,
    located_error,
    read_yaml_file,
    validate,
)
from distill.core.errors import DistillError, InputError
from distill.core.model_folders import (
    is_student_folder,
    locate_checkpoint,
    read_student_format,
)
from distill.core.paths import DATA_DIR
from distill.core.predictors import model_fingerprint, student_prompt
from distill.core.prompts import STUDENT_KINDS, PromptKind, PromptTemplate, load_prompt
from distill.generate.engines import STUDENT_ENGINE, engine_class
from distill.generate.engines.base import Engine, EngineOptions
from distill.schemas import SamplingParams, content_hash
from distill.schemas.base import Identifier

TEACHERS_DIR = DATA_DIR / "teachers"
# Engines whose model is a local folder they load (a served model's name is not a path,
# even where a folder of that name happens to exist)
LOCAL_ENGINES = ("hf", "vllm")


# vLLM samples greedily below this temperature (its _SAMPLING_EPS); a positive value under
# it (a denormal 1e-310) divides logits into infinities: "Probabilities contain NaN".
MIN_TEMPERATURE = 1e-5


class TeacherSpec(ConfigFile):

    engine: str
    model: str = Field(min_length=1)
    prompt: str | None = None  # cot; for a student, the prompt it was trained with
    k: int = Field(default=1, ge=1, le=1024)
    sampling: SamplingParams = SamplingParams()
    batch_size: int | None = Field(default=None, ge=1)
    # Images scaled down (aspect kept) to at most this many pixels before the engine
    # encodes them: the teacher's own input budget (Qwen2.5-VL's max_pixels, say).
    max_image_pixels: int | None = Field(default=None, ge=64)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sampling")
    @classmethod
    def _usable_temperature(cls, value: SamplingParams) -> SamplingParams:
        if not math.isfinite(value.temperature) or \
                0 < value.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature {value.temperature!r}: use 0 (greedy) or a "
                             f"finite value of at least {MIN_TEMPERATURE:g}")
        if not math.isfinite(value.top_p):
            raise ValueError(f"top_p {value.top_p!r}: use a number in (0, 1]")
        return value


class TeacherSetFile(ConfigFile):

    teachers: dict[Identifier, TeacherSpec] = Field(min_length=1)
    routing: dict[str, list[Identifier]] = Field(default_factory=dict)

    @field_validator("routing")
    @classmethod
    def _lists_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category, ids in value.items():
            if len(set(ids)) != len(ids):
                raise ValueError(f"category {category!r} lists a teacher twice")
        return value


@dataclass(frozen=True)
class StudentCheckpoint:
    """A teacher that is one of our students: where its checkpoint is, its run, and its
    content when the teacher set was read (``of``: hashed then, not when first asked, so a
    folder retrained in the meantime is never taken for the one that was named)."""

    path: Path
    run_manifest: Path | None
    fingerprint: str

    @classmethod
    def of(cls, path: Path, run_manifest: Path | None) -> StudentCheckpoint:
        return cls(path, run_manifest, model_fingerprint(path))

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "fingerprint": self.fingerprint,
                "run_manifest": str(self.run_manifest) if self.run_manifest else None}


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher: its spec, its prompt template and its validated engine options
    (and, for a student of ours, its checkpoint)."""

    id: str
    spec: TeacherSpec
    prompt: PromptTemplate
    options: EngineOptions
    engine_cls: type[Engine]
    checkpoint: StudentCheckpoint | None = None

    @property
    def engine_name(self) -> str:
        return self.engine_cls.name

    @property
    def batch_size(self) -> int | None:
        return self.spec.batch_size or self.engine_cls.default_batch_size

    def make_engine(self) -> Engine:
        return self.engine_cls(self.spec.model, self.options)

    def identity(self) -> dict[str, Any]:
        """What defines this teacher's outputs (hashed into the run's plan)."""
        identity = {"id": self.id, "engine": self.engine_name, "model": self.spec.model,
                    "prompt_hash": self.prompt.hash, "k": self.spec.k,
                    "sampling": self.spec.sampling.model_dump(mode="json")}
        if self.spec.max_image_pixels is not None:  # absent when unset: old plans still match
            identity["max_image_pixels"] = self.spec.max_image_pixels
        if self.checkpoint is not None:  # the same path retrained is another teacher
            identity["checkpoint_fingerprint"] = self.checkpoint.fingerprint
        return identity

    def output_options(self) -> dict[str, Any]:
        """The engine options that can change what this teacher answers (``pool_seed``,
        ``extra_body``, a vLLM ``dtype`` or ``engine_args``), as set in the file: the ones an
        engine calls operational (URLs, concurrency, timeouts, windows) can change between
        two runs on one --out, these cannot. Defaults are left out, so that an option a new
        version adds does not make an old folder look changed."""
        operational = getattr(self.options, "operational", frozenset())
        return {name: value for name, value in
                self.options.model_dump(mode="json", exclude_defaults=True).items()
                if name not in operational}


@dataclass(frozen=True)
class TeacherSet:
    teachers: dict[str, Teacher]
    routing: dict[str, list[str]]
    source: str

    def for_category(self, category: str) -> list[Teacher]:
        ids = self.routing.get(category, self.routing.get("default"))
        if ids is None:
            ids = list(self.teachers) if not self.routing else []
        return [self.teachers[teacher_id] for teacher_id in ids]

    @cached_property
    def hash(self) -> str:
        return content_hash({"teachers": [t.identity() for t in self.teachers.values()],
                             "routing": self.routing})

    def output_options(self) -> dict[str, dict[str, Any]]:
        """Each teacher's ``Teacher.output_options``."""
        return {tid: t.output_options() for tid, t in self.teachers.items()}

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "hash": self.hash, "routing": self.routing,
                "teachers": {tid: {**t.identity(), "prompt_id": t.prompt.id,
                                   "options": t.options.model_dump(mode="json"),
                                   **({"checkpoint": t.checkpoint.describe()}
                                      if t.checkpoint else {})}
                             for tid, t in self.teachers.items()}}


def resolve_engine(document: YamlDocument, where: tuple[str, ...], engine: str,
                   options: dict[str, Any]) -> tuple[type[Engine], EngineOptions]:
    """The engine class a config names and its options, checked against the engine's own
    Options model; errors name the file and the key (``where`` + engine/options)."""
    try:
        cls = engine_class(engine)
    except DistillError as exc:
        raise document.error((*where, "engine"), str(exc), "bad_teacher") from None
    try:
        return cls, cls.Options.model_validate(options)
    except ValidationError as exc:
        raise located_error(exc, document, cls.Options, prefix=(*where, "options")) from None


def resolve_prompt(document: YamlDocument, where: tuple[str, ...], name: str,
                   kind: PromptKind | tuple[PromptKind, ...]) -> PromptTemplate:
    try:
        return load_prompt(name, kind)
    except InputError as exc:
        raise document.error(where, f"prompt {name!r}: {exc}", "bad_teacher") from None


def load_teacher_set(name_or_path: str | Path) -> TeacherSet:
    """A teacher set by path, or by name of a file in data/teachers (``digits``)."""
    document = read_yaml_file(name_or_path, TEACHERS_DIR, "teacher set")
    return resolve_teacher_set(document, validate(document, TeacherSetFile))


def resolve_teacher_set(document: YamlDocument, parsed: TeacherSetFile) -> TeacherSet:
    """Engines, engine options and prompts of every teacher, checked where the file names
    them; routes only to teachers the file defines."""
    teachers = {}
    for teacher_id, spec in parsed.teachers.items():
        where = ("teachers", teacher_id)
        if spec.engine in LOCAL_ENGINES and is_student_folder(Path(spec.model).expanduser()):
            teachers[teacher_id] = _student_teacher(document, teacher_id, spec)
            continue
        cls, options = resolve_engine(document, where, spec.engine, spec.options)
        prompt = resolve_prompt(document, (*where, "prompt"), spec.prompt or "cot", "teacher")
        teachers[teacher_id] = Teacher(teacher_id, spec, prompt, options, cls)
    for category, ids in parsed.routing.items():
        for teacher_id in ids:
            if teacher_id not in teachers:
                raise document.error(("routing", category),
                                     f"routes to undefined teacher {teacher_id!r} (defined: "
                                     f"{sorted(teachers)})", "bad_teacher")
    return TeacherSet(teachers, dict(parsed.routing), str(document.path))


def _student_teacher(document: YamlDocument, teacher_id: str, spec: TeacherSpec) -> Teacher:
    """A trained student as a teacher: its checkpoint named and fingerprinted, asked with
    a prompt it was trained on (its CoT one unless ``prompt`` names another of them);
    ``hf`` runs it through the student's own loader, ``vllm`` through the package's plugin."""
    where = ("teachers", teacher_id)
    try:
        checkpoint, run_manifest = locate_checkpoint(Path(spec.model).expanduser())
        trained = read_student_format(checkpoint).prompts  # mode -> prompt name
    except InputError as exc:
        raise document.error((*where, "model"), exc.message, "bad_teacher") from None
    cls, options = resolve_engine(document, where, spec.engine, spec.options)
    if spec.engine == "hf":
        cls = engine_class(STUDENT_ENGINE)
    mode = "cot"
    if spec.prompt is not None:
        given = resolve_prompt(document, (*where, "prompt"), spec.prompt, STUDENT_KINDS)
        modes = {load_prompt(name, STUDENT_KINDS).hash: trained_mode
                 for trained_mode, name in trained.items()}
        if given.hash not in modes:
            raise document.error((*where, "prompt"),
                                 f"this student was trained to be asked with "
                                 f"{' or '.join(sorted(set(trained.values())))} (its saved "
                                 f"prompts); prompt {spec.prompt!r} would ask it in a layout "
                                 "it never saw (leave prompt out for its CoT prompt)",
                                 "bad_teacher")
        mode = modes[given.hash]
    prompt = student_prompt(checkpoint, mode)  # without system text if trained without
    spec = spec.model_copy(update={"model": str(checkpoint), "prompt": prompt.id})
    return Teacher(teacher_id, spec, prompt, options, cls,
                   StudentCheckpoint.of(checkpoint, run_manifest))
